"""rules.yaml's `state.shared` (the fleet's Redis URL) and `state.instance`, loaded with the real
`load_config`: a wrong URL is one line naming file, line and field, and never shows the password
written in it (nor a value taken from the environment); `${VAR}` is expanded."""

from __future__ import annotations

from pathlib import Path

import pytest

from xinf_watch.config.schema import ConfigError, load_config

EXPECTED = "is not a Redis URL (expected e.g. redis://127.0.0.1:6379/0)"


def write(tmp_path: Path, shared: str, instance: str = "gw-1") -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"# the fleet\nstate:\n  instance: {instance}\n  shared: {shared}\n", encoding="utf-8")
    return rules


@pytest.mark.parametrize(
    ("shared", "shown", "secrets"),
    [
        ('"http://user:s3cretpw@redis.internal:6379/0"', '"http://***@redis.internal:6379/0"', ["s3cretpw"]),
        ('"redis:/:s3cretpw@redis.internal/0"', '"redis:/***@redis.internal/0"', ["s3cretpw"]),
        # an unescaped / ? or # in a password ends the host early: refused, and all of it hidden
        (
            '"redis://:pass/w0rd@redis.internal:6379/0"',
            '"redis://***@redis.internal:6379/0"',
            ["pass", "w0rd"],
        ),
        ('"redis://u:7391/zq8x@redis.internal/0"', '"redis://***@redis.internal/0"', ["u:7391", "zq8x"]),
        ('"redis://u:pass?w0rd@redis.internal/0"', '"redis://***@redis.internal/0"', ["pass", "w0rd"]),
        ('"rediss://:pa#ss@redis.internal/0"', '"rediss://***@redis.internal/0"', ["pa#ss", "pa"]),
        ('"redis://:s3cretpw@redis.internal:63a9/0"', '"redis://***@redis.internal:63a9/0"', ["s3cretpw"]),
        ('"redis://:s3cretpw@/0"', '"redis://***@/0"', ["s3cretpw"]),
        ('"redis://"', '"redis://"', []),
        ("redis.internal:6379", '"redis.internal:6379"', []),
        ('"${URL}"', '"${URL}"', ["envpw", "ftp"]),  # what the file says, not the environment's value
    ],
)
def test_a_wrong_url_is_one_line_without_its_password(
    tmp_path: Path, shared: str, shown: str, secrets: list[str]
) -> None:
    rules = write(tmp_path, shared)
    with pytest.raises(ConfigError) as caught:
        load_config(rules, environ={"URL": "ftp://u:envpw@files.internal/"})
    assert caught.value.errors == (f"{rules}:4: state.shared: {shown} {EXPECTED}",)
    for secret in secrets:
        assert secret not in str(caught.value)


def test_an_unset_variable_is_named(tmp_path: Path) -> None:
    rules = write(tmp_path, '"redis://:${REDIS_PASSWORD}@redis.internal:6379/0"')
    with pytest.raises(ConfigError) as caught:
        load_config(rules, environ={})
    assert caught.value.errors == (
        f'{rules}:4: state.shared: environment variable "REDIS_PASSWORD" is not set'
        " (expected it in xinf-watch's environment)",
    )


def test_a_url_not_a_string_is_one_line(tmp_path: Path) -> None:
    rules = write(tmp_path, "[redis://redis.internal]")
    with pytest.raises(ConfigError) as caught:
        load_config(rules, environ={})
    assert len(caught.value.errors) == 1 and caught.value.errors[0].startswith(f"{rules}:4: state.shared: ")


@pytest.mark.parametrize(
    ("shared", "environ", "url"),
    [
        ('"redis://:${REDIS_PASSWORD}@redis.internal:6379/0"', {"REDIS_PASSWORD": "s3cret-pw"},
         "redis://:s3cret-pw@redis.internal:6379/0"),
        ('"${REDIS_URL}"', {"REDIS_URL": "rediss://xw:pw@10.0.0.7:6380/2"}, "rediss://xw:pw@10.0.0.7:6380/2"),
        ("redis://127.0.0.1:6379/0", {}, "redis://127.0.0.1:6379/0"),
        ('"redis://[::1]:6379"', {}, "redis://[::1]:6379"),
        ("redis://redis.internal", {}, "redis://redis.internal"),
        ("unix:///run/redis/redis.sock", {}, "unix:///run/redis/redis.sock"),
    ],
)  # fmt: skip
def test_a_redis_url_is_taken_with_its_variables_expanded(
    tmp_path: Path, shared: str, environ: dict[str, str], url: str
) -> None:
    config = load_config(write(tmp_path, shared), environ=environ)
    assert config.state.shared == url and config.state.instance == "gw-1"


def test_instance_takes_a_name(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("state: {dir: /tmp/x}\n", encoding="utf-8")
    assert load_config(rules).state.instance is None and load_config(rules).state.shared is None  # host name
    rules = write(tmp_path, "redis://redis.internal", instance="'gateway 2'")
    with pytest.raises(ConfigError) as caught:
        load_config(rules, environ={})
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(f"{rules}:3: state.instance: ")
