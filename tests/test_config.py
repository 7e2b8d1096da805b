"""rules.yaml loading: every broken file gives exactly its expected lines; good files give typed values."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import ValidationError

from xinf_watch.config.filters import StatusSet
from xinf_watch.config.rules import (
    AbsentRule,
    DistinctRule,
    KeyExpiryRule,
    MatchRule,
    NewValueRule,
    SpikeRule,
    ThresholdRule,
)
from xinf_watch.config.schema import Config, ConfigError, empty_config, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.config.values import format_duration, parse_duration
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.model import CredentialKind, KeyState, Outcome, Severity

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
GOOD = DATA / "good"
SHIPPED = Path(__file__).parent.parent / "rules"
ENV = {"XW_TEST_SLACK": "s3cret-token", "XW_TEST_AM_HOST": "am.internal"}


# -- broken files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.glob("*.yaml")))
def test_bad_config_gives_exactly_its_expected_lines(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected_file = BAD / name.replace(".yaml", ".expected")
    assert expected_file.exists(), f"{name} has no {expected_file.name}"
    monkeypatch.chdir(BAD)  # messages start with the file name as given
    with pytest.raises((ConfigError, KeyFileError)) as caught:
        config = load_config(name, environ={})
        load_registry(config.keys, config.key_sites)  # key files that cannot be opened: at their line
    assert str(caught.value).splitlines() == expected_file.read_text(encoding="utf-8").splitlines()
    if isinstance(caught.value, ConfigError):
        assert str(caught.value) == "\n".join(caught.value.errors)


def test_key_sites_name_each_key_file_where_it_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOOD)
    config = load_config("full.yaml", environ=ENV)
    lines = Path("full.yaml").read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("keys:"))
    assert config.key_sites == (f"full.yaml:{line}: keys[0]", f"full.yaml:{line}: keys[1]")
    assert empty_config().key_sites == ()


def test_every_expected_file_has_its_config() -> None:
    orphans = [p.name for p in BAD.glob("*.expected") if not p.with_suffix(".yaml").exists()]
    assert orphans == []
    assert len(list(BAD.glob("*.yaml"))) >= 14


def test_all_problems_come_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(ConfigError) as caught:
        load_config("multiple-errors.yaml", environ={})
    lines = [int(e.split(":")[1]) for e in caught.value.errors]
    assert len(lines) >= 10 and lines == sorted(lines)  # file order


def test_messages_name_the_file_as_given() -> None:
    given = str(BAD.relative_to(Path.cwd()) if BAD.is_relative_to(Path.cwd()) else BAD) + "/bad-duration.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(given)
    assert caught.value.errors == (
        f'{given}:13: rules[0].window: "5 minutes" is not a duration (expected e.g. 30s, 5m, 1h)',
    )


def test_missing_and_unreadable_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.errors == (f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory",)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.errors == (f"{tmp_path}: cannot read: Is a directory",)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.yaml: cannot read: not UTF-8 text"):
        load_config(binary)


def test_environment_values_never_appear_in_messages(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text('alertmanager: {url: "${AM}"}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(rules, environ={"AM": "not a url s3cret"})
    assert "s3cret" not in str(caught.value)
    assert caught.value.errors == (
        f'{rules}:1: alertmanager.url: "${{AM}}" is not an http(s) URL (expected e.g. http://127.0.0.1:9093)',
    )


# -- good files ---------------------------------------------------------------------------------


def test_minimal_config_takes_the_defaults() -> None:
    config = load_config(GOOD / "minimal.yaml")
    assert config.path == (GOOD / "minimal.yaml").resolve()
    (source,) = config.sources
    assert source.path == str(GOOD.resolve() / "logs" / "access.log")
    assert (source.format, source.log_format, source.start_at) == ("nginx", "combined_key", "end")
    assert source.preset is None and source.fields is None and source.xinference_version is None
    assert config.keys == () and config.rules == () and config.alertmanager is None
    assert dict(config.notify) == {}
    assert list(config.networks) == ["internal"]
    assert config.networks["internal"] == tuple(
        ip_network(c)
        for c in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")
    )
    assert (config.metrics.listen, config.metrics.host, config.metrics.port) == (
        "127.0.0.1:9877",
        "127.0.0.1",
        9877,
    )
    assert config.state.dir == Path("/var/lib/xinf-watch")


def test_full_config_gives_typed_values() -> None:
    config = load_config(GOOD / "full.yaml", environ=ENV)
    here = GOOD.resolve()
    gateway, caddy, edge, custom, audit = config.sources
    assert gateway.path == f"{here}/logs/nginx/*.log"
    assert gateway.log_format is not None and gateway.log_format.endswith("$request_time")
    assert (gateway.start_at, gateway.xinference_version) == ("beginning", "2.11")
    assert (caddy.format, caddy.preset, dict(caddy.fields or {})) == (
        "json", "caddy", {"request_id": "resp_headers.X-Request-Id"}
    )  # fmt: skip
    assert edge.path == str(Path.home() / "haproxy.log") and dict(edge.fields or {}) == {
        "captures": "Authorization|User-Agent"
    }
    assert custom.path == str(here.parent / "custom.log") and custom.pattern is not None
    assert (audit.format, audit.xinference_version, audit.log_format) == ("xinference-audit", "4", None)
    assert config.keys == (here / "keys.yaml", Path("/etc/xinference/auth.json"))
    assert config.networks["office"] == (ip_network("10.1.0.0/16"), ip_network("2001:db8:1::/48"))
    assert config.networks["vpn"] == (ip_network("10.8.0.0/24"),)
    assert "internal" in config.networks
    assert [(s.method, s.path, s.scope) for s in config.scopes] == [("POST", "/v1/custom/*", "models:read")]
    assert (config.metrics.host, config.metrics.port) == ("::1", 9100)
    assert config.state.dir == here / "state"
    assert dict(config.notify) == {
        "ops": ("json://alerts.internal/hook", "slack://s3cret-token/alerts"),
        "security": (f"{here}/apprise.yml",),
        "quiet": (),
    }
    assert config.alertmanager is not None and config.alertmanager.url == "http://am.internal:9093"

    burst, office, subnet, spike, expiring, gateway_silent, all_silent, spraying = config.rules
    assert isinstance(burst, ThresholdRule)
    assert (burst.count, burst.window, burst.cooldown, burst.severity) == (
        20,
        60.0,
        5400.0,
        Severity.CRITICAL,
    )
    assert burst.by == ("ip",) and burst.notify == ("ops", "security")
    assert burst.when.outcome == frozenset({Outcome.DENIED})
    assert burst.when.source == ("gateway", "caddy")
    assert burst.when.status == StatusSet(frozenset({401, 403}), frozenset({4}))
    assert (
        404 in burst.when.status
        and 503 not in burst.when.status
        and list(burst.when.status) == [401, 403, "4xx"]
    )

    assert isinstance(office, MatchRule) and office.by == () and office.cooldown == 0.0
    assert office.severity == Severity.WARNING and office.notify == ("ops",)
    when = office.when
    assert when.ip == config.networks["office"] + config.networks["vpn"] + (ip_network("192.168.7.0/24"),)
    assert when.ip_not_in == config.networks["internal"]
    assert when.ip_forwarded is False and when.ip_allowed is None
    assert when.method == frozenset({"GET", "POST"}) and when.path == ("/v1/*",)
    assert when.user_agent is not None and when.user_agent.search("curl/8.5")
    assert when.reason == frozenset({"invalid_key"}) and when.key == frozenset({"alice-*"})

    assert isinstance(subnet, NewValueRule)
    assert (subnet.value, subnet.learn, subnet.forget, subnet.by) == ("ip/24", 3600.0, 30 * 86400.0, ("key",))
    assert subnet.when.credential == frozenset({CredentialKind.API_KEY})
    assert subnet.when.key_state == frozenset({KeyState.VALID})
    assert isinstance(spike, SpikeRule)
    assert (spike.window, spike.factor, spike.min_count, spike.baseline) == (300.0, 2.5, 100, 3600.0)
    assert isinstance(expiring, KeyExpiryRule)
    assert (expiring.within, expiring.max_age, expiring.no_expiry, expiring.only_used) == (
        14 * 86400.0, 90 * 86400.0, True, False
    )  # fmt: skip
    assert expiring.by == ("key",) and expiring.when.owner == frozenset({"alice", "bob"})
    assert isinstance(gateway_silent, AbsentRule) and isinstance(all_silent, AbsentRule)
    assert (gateway_silent.for_, gateway_silent.sources, gateway_silent.by) == (
        900.0,
        ("gateway",),
        ("source",),
    )
    assert all_silent.sources == ("gateway", "caddy", "edge", "custom", "audit")
    assert isinstance(spraying, DistinctRule)
    assert (spraying.value, spraying.count, spraying.window) == ("fingerprint", 10, 300.0)


def test_anchors_merge_keys_and_own_internal_network() -> None:
    config = load_config(GOOD / "anchors.yaml")
    assert config.networks["internal"] == (ip_network("10.0.0.0/8"),)
    revoked, webui = config.rules
    assert (revoked.severity, revoked.cooldown) == (Severity.CRITICAL, 1800.0)
    assert (webui.severity, webui.cooldown) == (Severity.CRITICAL, 300.0)
    assert webui.when.ip_not_in == (ip_network("10.0.0.0/8"),)


def test_shipped_rules_load() -> None:
    shipped = sorted(SHIPPED.glob("*.yaml"))
    assert shipped, "no rules/*.yaml"
    for path in shipped:
        config = load_config(path, environ={})
        assert config.rules
    names = {rule.name for rule in load_config(SHIPPED / "rules.yaml", environ={}).rules}
    assert {
        "denied-burst", "key-spraying", "new-ip-for-key", "expired-key-used", "revoked-key-used",
        "expired-jwt-accepted", "scope-violation", "key-state-not-enforced", "scope-not-enforced",
        "key-outside-allowed-ips", "webui-external", "admin-route-external", "rate-spike", "key-expiring",
        "source-silent",
    } <= names  # fmt: skip


# -- values -------------------------------------------------------------------------------------


def test_config_objects_are_immutable() -> None:
    config = load_config(GOOD / "full.yaml", environ=ENV)
    rule = config.rules[0]
    with pytest.raises(ValidationError):
        config.rules = ()
    with pytest.raises(ValidationError):
        rule.name = "other"
    with pytest.raises(ValidationError):
        rule.when.outcome = None
    with pytest.raises(ValidationError):
        config.sources[0].path = "/elsewhere"
    with pytest.raises(TypeError):
        config.networks["evil"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        config.notify["ops"] = ()  # type: ignore[index]
    with pytest.raises(AttributeError):
        rule.when.outcome.add(Outcome.ALLOWED)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        config.sources[1].fields["ts"] = "time"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0), ("2w", 1209600.0),
        ("1h30m", 5400.0), ("250ms", 0.25), ("1.5h", 5400.0), ("1d12h", 129600.0), (" 10m ", 600.0),
        (90, 90.0), (1.5, 1.5), ("45", 45.0), ("0", 0.0), (0, 0.0),
    ],
)  # fmt: skip
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "5 minutes", "5min", "m", "1h 30m", "-5", -5, "1y", "h1", "1.h", True, float("inf"), "nan", None],
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.25, 1, 59, 90, 3600, 5400, 604800, 2592000, 3661.5])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_objects_built_in_code_need_no_file() -> None:
    adhoc = SourceConfig(name="replay", path="", format="json", preset="caddy")
    assert (adhoc.path, adhoc.log_format, adhoc.fields) == ("", None, None)
    nginx = SourceConfig(name="replay", path="access.log", format="nginx")
    assert (nginx.path, nginx.log_format) == ("access.log", "combined_key")
    config = empty_config()
    assert isinstance(config, Config) and config.sources == () and config.rules == ()
    assert "internal" in config.networks
