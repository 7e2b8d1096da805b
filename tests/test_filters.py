"""The `when:` filter language (docs/DESIGN.md section 3), field by field, as rules.yaml spells it.

Each filter is loaded from YAML with the real `load_config` (so network names, status classes
and enums go through the same validation as in production) and compiled with `compile_filter`.
The engine splits a filter into its few-valued fields (`admits`) and the rest
(`compile_filter(..., indexed=False)`); a property test checks the split agrees with the whole.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruletools import T0, event, load_rules

from xinf_watch.addresses import parse_ip
from xinf_watch.attribution.attribute import Attributor
from xinf_watch.attribution.scopes import load_scope_map
from xinf_watch.keys.registry import KeyEntry, KeyRegistry, sha256_hex
from xinf_watch.model import CredentialKind, Event, KeyState, Outcome, Record
from xinf_watch.rules import filters as filters_module
from xinf_watch.rules.filters import INDEXED, admits, compile_filter, glob_matcher, subnet_of

NETWORKS = """
office: [10.1.0.0/16, "2001:db8:1::/48"]
vpn: 10.8.0.0/24
"""


def when(tmp_path: Path, text: str) -> Any:
    config = load_rules(tmp_path, f"- {{name: r, kind: match, when: {text}}}", NETWORKS)
    return config.rules[0].when


def matches(tmp_path: Path, text: str, *events: Event) -> list[bool]:
    predicate = compile_filter(when(tmp_path, text))
    return [predicate(e) for e in events]


def test_empty_filter_matches_everything(tmp_path: Path) -> None:
    assert matches(tmp_path, "{}", event(T0), event(T0, status=500, key="none")) == [True, True]


def test_source(tmp_path: Path) -> None:
    config = load_rules(
        tmp_path, "- {name: r, kind: match, when: {source: audit}}", sources=("gateway", "audit")
    )
    predicate = compile_filter(config.rules[0].when)
    assert [predicate(event(T0, source=s)) for s in ("audit", "gateway")] == [True, False]


@pytest.mark.parametrize(
    ("text", "ips", "expected"),
    [
        ("{ip: 10.1.2.0/24}", ["10.1.2.3", "10.1.3.3"], [True, False]),
        ("{ip: [office, vpn]}", ["10.1.200.1", "10.8.0.9", "10.9.0.1"], [True, True, False]),
        ("{ip: office}", ["2001:db8:1::5", "2001:db8:2::5"], [True, False]),
        ("{ip: internal}", ["127.0.0.1", "192.168.1.1", "::1", "8.8.8.8"], [True, True, True, False]),
        ("{ip: internal}", ["::ffff:10.0.0.7", "::ffff:8.8.8.8"], [True, False]),  # IPv4-mapped
        ("{ip_not_in: internal}", ["10.0.0.1", "203.0.113.5", "unix:", "-"], [False, True, True, True]),
        ("{ip_not_in: [office, 127.0.0.0/8]}", ["10.1.0.1", "127.0.0.2", "10.2.0.1"], [False, False, True]),
    ],
)
def test_ip_and_ip_not_in(tmp_path: Path, text: str, ips: list[str], expected: list[bool]) -> None:
    assert matches(tmp_path, text, *(event(T0, ip=ip) for ip in ips)) == expected


@pytest.mark.parametrize("field", ["ip_allowed", "ip_forwarded", "scope_allowed"])
def test_booleans_match_only_known_values(tmp_path: Path, field: str) -> None:
    values: list[bool | None] = [True, False] if field == "ip_forwarded" else [True, False, None]
    events = [event(T0, **{field: v}) for v in values]
    none = [False] if field != "ip_forwarded" else []
    assert matches(tmp_path, f"{{{field}: true}}", *events) == [True, False, *none]
    assert matches(tmp_path, f"{{{field}: false}}", *events) == [False, True, *none]


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("{key: alice}", ["alice", "alice2", "unknown"], [True, False, False]),
        ("{key: [alice, 'jwt:*']}", ["alice", "jwt:root", "bob"], [True, True, False]),
        ("{key: 'chatbot-?rod'}", ["chatbot-prod", "chatbot-staging"], [True, False]),
    ],
)
def test_key_aliases_and_globs(tmp_path: Path, text: str, values: list[str], expected: list[bool]) -> None:
    assert matches(tmp_path, text, *(event(T0, key=v) for v in values)) == expected


def test_owner_globs_and_no_owner(tmp_path: Path) -> None:
    events = [
        event(T0, owner="etl"),
        event(T0, owner="etl-batch"),
        event(T0, owner="ops"),
        event(T0, owner=None),
    ]
    assert matches(tmp_path, "{owner: 'etl*'}", *events) == [True, True, False, False]
    assert matches(tmp_path, "{owner: [ops]}", *events) == [False, False, True, False]


def test_credential_and_key_state(tmp_path: Path) -> None:
    events = [
        event(T0, credential=CredentialKind.API_KEY, key_state=KeyState.VALID),
        event(T0, credential=CredentialKind.JWT, key_state=KeyState.EXPIRED),
        event(T0, credential=CredentialKind.NONE, key_state=KeyState.NONE),
        event(T0, credential=CredentialKind.OTHER, key_state=KeyState.UNKNOWN),
    ]
    assert matches(tmp_path, "{credential: api_key}", *events) == [True, False, False, False]
    assert matches(tmp_path, "{credential: [jwt, other]}", *events) == [False, True, False, True]
    assert matches(tmp_path, "{credential: none}", *events) == [False, False, True, False]
    assert matches(tmp_path, "{key_state: [expired, revoked]}", *events) == [False, True, False, False]
    assert matches(tmp_path, "{key_state: unknown}", *events) == [False, False, False, True]
    # fields AND together
    assert matches(tmp_path, "{credential: jwt, key_state: valid}", *events) == [False] * 4


def test_scope_globs(tmp_path: Path) -> None:
    scopes = ["models:list", "models:read", "admin", "webui", "users:list", "public"]
    events = [event(T0, scope=s) for s in scopes]
    assert matches(tmp_path, "{scope: 'models:*'}", *events) == [True, True, False, False, False, False]
    assert matches(tmp_path, "{scope: [admin, 'users:*', webui]}", *events) == [
        False,
        False,
        True,
        True,
        True,
        False,
    ]


def test_outcome_status_and_reason(tmp_path: Path) -> None:
    statuses = [200, 307, 401, 403, 404, 429, 502]
    events = [event(T0, status=s) for s in statuses]
    assert [e.outcome for e in events] == [
        Outcome.ALLOWED, Outcome.ALLOWED, Outcome.DENIED, Outcome.DENIED,
        Outcome.CLIENT_ERROR, Outcome.THROTTLED, Outcome.ERROR,
    ]  # fmt: skip
    assert matches(tmp_path, "{outcome: denied}", *events) == [False, False, True, True, False, False, False]
    assert matches(tmp_path, "{outcome: [throttled, error]}", *events) == [False] * 5 + [True, True]
    assert matches(tmp_path, "{status: 4xx}", *events) == [False, False, True, True, True, True, False]
    assert matches(tmp_path, "{status: [307, 5xx]}", *events) == [
        False,
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    assert matches(tmp_path, "{status: '404'}", *events) == [False] * 4 + [True, False, False]
    reasons = [event(T0, status=401, reason=r) for r in ("key_expired", "invalid_key", None)]
    assert matches(tmp_path, "{reason: [key_expired, key_disabled]}", *reasons) == [True, False, False]


def test_method_and_path(tmp_path: Path) -> None:
    events = [
        event(T0, method="POST", path="/v1/chat/completions"),
        event(T0, method="GET", path="/v1/models/qwen2.5-instruct"),
        event(T0, method="delete", path="/v1/models/qwen2.5-instruct"),  # as some logs write it
    ]
    assert matches(tmp_path, "{method: post}", *events) == [True, False, False]
    assert matches(tmp_path, "{method: [GET, DELETE]}", *events) == [False, True, True]
    assert matches(tmp_path, "{path: '/v1/models/*'}", *events) == [False, True, True]
    assert matches(tmp_path, "{path: /v1/chat/completions}", *events) == [True, False, False]
    assert matches(tmp_path, "{method: DELETE, path: '/v1/models/*'}", *events) == [False, False, True]


def test_user_agent_regex(tmp_path: Path) -> None:
    agents = ["python-requests/2.31", "OpenAI/Python 1.82.0", "curl/8.5.0", None]
    events = [event(T0, user_agent=a) for a in agents]
    assert matches(tmp_path, r"{user_agent: '^(curl|python-requests)/'}", *events) == [
        True,
        False,
        True,
        False,
    ]
    assert matches(tmp_path, "{user_agent: 'Python'}", *events) == [False, True, False, False]  # search


def test_webui_external_filter_as_shipped(tmp_path: Path) -> None:
    text = "{scope: webui, ip_not_in: internal}"
    events = [event(T0, scope="webui", ip="127.0.0.1"), event(T0, scope="webui", ip="203.0.113.8"),
              event(T0, scope="models:list", ip="203.0.113.8")]  # fmt: skip
    assert matches(tmp_path, text, *events) == [False, True, False]


def test_parse_ip_and_subnets() -> None:
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_ip("not-an-ip") is None
    assert subnet_of("10.1.2.3", 24) == "10.1.2.0/24"
    assert subnet_of("2001:db8:1:2:3::4", 24) == "2001:db8:1:2::/64"  # IPv6: /64 for small prefixes
    assert subnet_of("2001:db8:1:2:3::4", 48) == "2001:db8:1::/48"
    assert subnet_of("2001:db8:1:2:3::4", 33) == "2001:db8::/33"  # over 32: as given
    assert subnet_of("2001:db8:1:2:3::4", 32) == "2001:db8:1:2::/64"
    assert subnet_of("::ffff:10.1.2.3", 16) == "10.1.0.0/16"  # an IPv4-mapped address is IPv4
    assert subnet_of("-", 24) == "-"


# -- the index split: admits() on the few-valued fields + the residual predicate == the whole -------

FILTERS = [
    "{}",
    "{outcome: denied}",
    "{credential: api_key, key_state: valid}",
    "{credential: api_key, scope_allowed: false}",
    "{key_state: [expired, revoked], outcome: allowed}",
    "{scope_allowed: false, outcome: allowed}",
    "{ip_allowed: false}",
    "{ip_forwarded: true, status: 2xx}",
    "{scope: [admin, 'users:*'], ip_not_in: internal, outcome: [allowed, client_error, error]}",
    "{key_state: unknown, credential: [api_key, other], method: GET}",
]

events_st = st.builds(
    event,
    st.just(T0),
    ip=st.sampled_from(["10.0.0.1", "203.0.113.5", "::1", "garbage"]),
    status=st.sampled_from([200, 401, 403, 404, 429, 500]),
    credential=st.sampled_from(list(CredentialKind)),
    key_state=st.sampled_from(list(KeyState)),
    scope=st.sampled_from(["admin", "users:list", "models:read", "webui"]),
    scope_allowed=st.sampled_from([True, False, None]),
    ip_allowed=st.sampled_from([True, False, None]),
    ip_forwarded=st.booleans(),
    method=st.sampled_from(["GET", "POST"]),
)


@pytest.fixture(scope="module")
def filter_rules(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rules = "\n".join(f"- {{name: r{i}, kind: match, when: {f}}}" for i, f in enumerate(FILTERS))
    return load_rules(tmp_path_factory.mktemp("filters"), rules).rules


@settings(max_examples=300, deadline=None)
@given(events=st.lists(events_st, min_size=1, max_size=5))
def test_index_split_agrees_with_the_whole_filter(filter_rules: Any, events: list[Event]) -> None:
    for rule in filter_rules:
        whole, rest = compile_filter(rule.when), compile_filter(rule.when, indexed=False)
        for e in events:
            index = tuple(getattr(e, f) for f in INDEXED)
            assert whole(e) == (admits(rule.when, index) and rest(e)), (rule.when, e)


def test_allowed_ips_and_ip_filters_agree_on_ipv4_mapped_ipv6(tmp_path: Path) -> None:
    """Dual-stack nginx logs IPv4 clients as ::ffff:a.b.c.d: inside allowed_ips 10.0.0.0/8 is
    inside, for attribution (ip_allowed) as for the `ip` filter (issue 11)."""
    entry = KeyEntry("svc", "ops", frozenset({"models:list"}), None, None, False,
                     (ip_network("10.0.0.0/8"),), sha256_hex("sk-AAAAAAAAAAAAA"), None)  # fmt: skip
    registry = KeyRegistry([entry])
    attributor = Attributor("gateway", lambda: registry, load_scope_map())
    credential = "Bearer sk-AAAAAAAAAAAAA"
    inside = attributor.attribute(Record(T0, "::ffff:10.1.2.3", "GET", "/v1/models", 200, credential))
    assert (inside.key, inside.ip_allowed) == ("svc", True)
    outside = attributor.attribute(Record(T0, "::ffff:192.0.2.1", "GET", "/v1/models", 200, credential))
    assert outside.ip_allowed is False
    assert matches(tmp_path, "{ip: 10.0.0.0/8}", inside, outside) == [True, False]


# -- edges of the language: status classes, several globs, many fields, the residual predicate ------


def test_a_status_class_is_exactly_its_hundred_codes(tmp_path: Path) -> None:
    events = [event(T0, status=s) for s in (399, 400, 499, 500, 599)]
    assert matches(tmp_path, "{status: 4xx}", *events) == [False, True, True, False, False]
    assert matches(tmp_path, "{status: [5xx, 399]}", *events) == [True, False, False, True, True]


def test_several_glob_patterns_each_match_on_their_own(tmp_path: Path) -> None:
    keys = ["jwt:root", "svc-a", "svc-ab", "alice", "xjwt:root", "jwt:rootXX"]
    events = [event(T0, key=k) for k in keys]
    assert matches(tmp_path, "{key: ['jwt:*t', 'svc-?', alice]}", *events) == [
        True, True, False, True, False, False,
    ]  # fmt: skip
    match = glob_matcher(["jwt:*t", "svc-?", "alice"])
    assert [match(k) for k in keys] == [True, True, False, True, False, False] and match(None) is False


def test_many_fields_all_have_to_match(tmp_path: Path) -> None:
    text = "{method: GET, path: '/v1/*', status: 2xx, key: alice, ip: office, user_agent: OpenAI}"
    good = event(T0)
    assert matches(tmp_path, text, good) == [True]
    each_wrong = [
        event(T0, method="POST"), event(T0, path="/ui/"), event(T0, status=404), event(T0, key="bob"),
        event(T0, ip="203.0.113.5"), event(T0, user_agent="curl/8.5.0"),
    ]  # fmt: skip
    assert matches(tmp_path, text, *each_wrong) == [False] * len(each_wrong)
    four = "{method: GET, path: '/v1/*', status: 2xx, key: alice}"
    expected = [True, False, False, False, False, True]  # address and agent are not in these four
    assert matches(tmp_path, four, good, *each_wrong[:4], each_wrong[4]) == expected


def test_compile_filter_takes_any_object_with_some_of_the_fields() -> None:
    """Fields an object lacks are not checked; a user_agent given as a plain string is compiled
    (time-bounded) as rules.yaml's is."""
    predicate = compile_filter(SimpleNamespace(user_agent="^curl/", outcome=[Outcome.ALLOWED]))
    agents = [event(T0, user_agent="curl/8.5.0"), event(T0, user_agent="OpenAI/Python 1.82.0"),
              event(T0, user_agent="curl/8.5.0", status=401), event(T0, user_agent=None)]  # fmt: skip
    assert [predicate(e) for e in agents] == [True, False, False, False]
    assert compile_filter(SimpleNamespace())(event(T0)) is True
    assert admits(SimpleNamespace(), (None,) * len(INDEXED)) is True


def test_the_subnet_cache_is_bounded() -> None:
    sizes: set[int] = set()
    for i in range(filters_module._SUBNET_CACHE_MAX + 1):  # as many new addresses as it holds, and one
        subnet_of(f"10.{i >> 8 & 255}.{i & 255}.{i >> 16}", 24)
        sizes.add(len(filters_module._SUBNET_CACHE))
    assert max(sizes) <= filters_module._SUBNET_CACHE_MAX
    assert subnet_of("10.1.2.3", 24) == "10.1.2.0/24"


def test_the_residual_predicate_leaves_the_indexed_fields_to_admits(tmp_path: Path) -> None:
    rule = when(tmp_path, "{outcome: denied, scope_allowed: false, method: GET}")
    rest = compile_filter(rule, indexed=False)
    allowed = event(T0, status=200, scope_allowed=True)
    assert rest(allowed) is True and compile_filter(rule)(allowed) is False
    assert rest(event(T0, method="POST", status=403, scope_allowed=False)) is False
    index = tuple(getattr(allowed, f) for f in INDEXED)
    assert admits(rule, index) is False
