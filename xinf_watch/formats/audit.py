"""Xinference's `audit.log` (advanced auth, 2.10+): one JSON object per line -> one record per request.

audit.log is the only place Xinference ties a request to a key, by name rather than by value:
`user`, `api_key_name`, `api_key_prefix` (first 7 characters) and `auth_type` become the record's
`key_hint` (the credential stays None; the registry resolves the hint). Fields:

* ts: `@timestamp` (UTC, ms); ip: `client_ip` (derived from X-Forwarded-For by Xinference, so
  spoofable unless a trusted proxy overwrites the header); method: `method` (4.x; rows of older
  versions have none: "" and still parsed); path: `endpoint` (no query string); request_id:
  `request_id` (4.x; equals the `X-Request-Id` response header a gateway may log); duration:
  `latency_ms` / 1000 (0 or absent: None, which is how the auth check's own rows of versions
  before 4 are written: unmeasured).
* status: `status_code` (4.x). Rows without it get a status derived from `status`:
  success -> 200; invalid_key, invalid_token, no_credentials, key_expired, key_disabled,
  user_disabled, login_failed -> 401; insufficient_scope, denied, must_change_password -> 403;
  model_not_found -> 404; ip_banned, key_banned -> 429; error -> 500 (older versions write
  `error` for any failed response: 400s too, so a derived 500 means "failed", not "server error").
  A row with neither a status code nor a known status is UNPARSED.
* reason: the `status` string, except `success` (None): `invalid_key`, `key_expired`,
  `key_disabled`, `insufficient_scope`, `ip_banned`, `model_not_found`, `error`, ...

What is counted: one record per HTTP request that Xinference audited. A row is a request when it
has an `endpoint` and a status; `event_type` other than `api_call` counts too when it has both (a
`/token` login is a request), and is SKIPPED otherwise, while an `api_call` row without them is
UNPARSED. A second row of a request already counted is SKIPPED:

* 4.x rows carry `request_id`. Xinference 4.1.0 writes exactly one row per request (the fixture:
  2865 rows, 2865 requests, no request_id twice, public routes and the WebUI included), so no
  row is dropped there; should a request ever get two rows, the later ones are dropped: the parser
  remembers the last `RECENT_REQUEST_IDS` request ids (bounded memory) and skips a row whose id
  is among them.
* Rows without `request_id` (2.10 to 3.x) come from three writers (Xinference source, docs/xinference/FACTS.md
  4.3): the auth check (`latency_ms` 0, every denial and every successful non-inference call),
  the HTTP middleware (`latency_ms` measured), and the login route (`latency_ms` 0). Two kinds of
  middleware row repeat a request the auth check already wrote:
  (1) under `/v1/models*`, `/v1/admin*`, `/v1/token_routers*` (any outcome, when the request had
      an Authorization header): category `admin`, auth_type `jwt`, no key name or prefix (and an
      empty user when the caller used a key);
  (2) a model call on a route outside the inference prefixes (`/v1/messages`, `/anthropic/...`):
      category `inference`, after the auth check's `admin` success row for the same key.
  Such a row is SKIPPED when an unpaired auth-check row for the same endpoint (and, for (2), the
  same key prefix; preferably the same client_ip) was written at most `latency + PAIR_SLACK`
  seconds before it; each auth-check row absorbs one middleware row. Without one, the middleware
  row is its request's only row (a public route called with a token, a logout) and is counted.
  The kept row is the auth check's: it has the user and key, but it was written before the
  handler ran, so the later row's latency and outcome (a 404 after `success`) are lost.
  Pending auth-check rows are bounded (`MAX_PENDING_ENDPOINTS` x `MAX_PENDING_PER_ENDPOINT`).

Never in audit.log before 4.x, so never counted from it (docs/xinference/FACTS.md 4.3):
IP-allowlist rejections, public routes, the WebUI, `/status`, `/v1/cluster/auth`, and inference
calls made with a JWT.
4.1.0 audits the public routes, the WebUI and logins (the recording); it has no allowlist
rejection or JWT inference call to tell about those.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType

from xinf_watch.caches import remember
from xinf_watch.formats.common import Parser, json_object
from xinf_watch.formats.xinference import millisecond_timestamps
from xinf_watch.model import KeyHint, LineResult, Record

STATUS_CODES = MappingProxyType(
    {
        "success": 200,
        **dict.fromkeys(
            ("invalid_key", "invalid_token", "no_credentials", "key_expired", "key_disabled")
            + ("user_disabled", "login_failed"),
            401,
        ),
        **dict.fromkeys(("insufficient_scope", "denied", "must_change_password"), 403),
        "model_not_found": 404,
        "ip_banned": 429,
        "key_banned": 429,
        "error": 500,
    }
)
# audit.py's classify_endpoint: these are "inference"; the auth check writes no success row for them
INFERENCE_PREFIXES = (
    "/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/images/", "/v1/audio/",
    "/v1/video/", "/v1/sdapi/",
)  # fmt: skip
RECENT_REQUEST_IDS = 4096
PAIR_SLACK = 2.0  # seconds: logging delay between the auth check's row and the middleware's
MAX_PENDING_ENDPOINTS = 512
MAX_PENDING_PER_ENDPOINT = 32

_Pending = tuple[float, str, str, bool]  # ts, client_ip, key prefix, a key's success row


class _RecentIds:
    """The last `limit` request ids seen: FIFO, bounded."""

    __slots__ = ("_order", "_ids", "_limit")

    def __init__(self, limit: int) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._limit = limit

    def seen(self, request_id: str) -> bool:
        """True if `request_id` was seen before; remembers it otherwise."""
        if request_id in self._ids:
            return True
        if len(self._order) >= self._limit:
            self._ids.discard(self._order.popleft())
        self._order.append(request_id)
        self._ids.add(request_id)
        return False


class _AuthCheckRows:
    """Rows the auth check wrote (versions before 4), waiting for the middleware row that repeats them."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, deque[_Pending]] = {}

    def add(self, endpoint: str, row: _Pending) -> None:
        rows = self._pending.get(endpoint)
        if rows is None:  # a full cache starts over: forgetting only risks counting a request twice
            new_rows: deque[_Pending] = deque(maxlen=MAX_PENDING_PER_ENDPOINT)
            rows = remember(self._pending, endpoint, new_rows, MAX_PENDING_ENDPOINTS)
        rows.append(row)

    def take(self, endpoint: str, since: float, ip: str, key_prefix: str | None) -> bool:
        """Pair a middleware row with the oldest fitting auth-check row written since `since`."""
        rows = self._pending.get(endpoint)
        if not rows:
            return False
        while rows and rows[0][0] < since:
            rows.popleft()
        fitting = [row for row in rows if key_prefix is None or (row[3] and row[2] == key_prefix)]
        if not fitting:
            return False
        chosen = next((row for row in fitting if row[1] == ip), fitting[0])
        rows.remove(chosen)
        return True


def _text(obj: dict[str, object], name: str) -> str:
    value = obj.get(name)
    return value if type(value) is str else ""


def compile_audit() -> Parser:
    """A parser for audit.log lines; keeps the small state that drops a request's second row."""
    ts_of = millisecond_timestamps()
    recent = _RecentIds(RECENT_REQUEST_IDS)
    auth_check = _AuthCheckRows()
    hints: dict[tuple[str, str, str, str], KeyHint] = {}  # the same few keys, line after line

    def parse(line: str) -> Record | LineResult:
        obj = json_object(line)
        if isinstance(obj, LineResult):
            return obj
        endpoint, status_text, code = obj.get("endpoint"), obj.get("status"), obj.get("status_code")
        if type(code) is not int or not 100 <= code <= 599:
            code = STATUS_CODES.get(status_text) if type(status_text) is str else None
        if type(endpoint) is not str or not endpoint or code is None:
            request_row = obj.get("event_type", "api_call") == "api_call"
            return LineResult.UNPARSED if request_row else LineResult.SKIPPED
        stamp, ip = obj.get("@timestamp"), obj.get("client_ip")
        ts = ts_of(stamp) if type(stamp) is str else None
        if ts is None or type(ip) is not str or not ip:
            return LineResult.UNPARSED
        latency = obj.get("latency_ms")
        if (type(latency) is not float and type(latency) is not int) or not 0 <= latency < 1e9:
            latency = 0.0
        user, key_name = _text(obj, "user"), _text(obj, "api_key_name")
        prefix, auth_type = _text(obj, "api_key_prefix"), _text(obj, "auth_type")
        request_id = obj.get("request_id")
        if type(request_id) is str and request_id:
            if recent.seen(request_id):
                return LineResult.SKIPPED
        else:
            request_id = None
            if _repeats_auth_check(obj, endpoint, ts, latency, ip, key_name, prefix, auth_type, auth_check):
                return LineResult.SKIPPED
        hint_key = (user, key_name, prefix, auth_type)
        hint = hints.get(hint_key)
        if hint is None:
            hint = remember(hints, hint_key, KeyHint(user, key_name, prefix, auth_type), 4096)
        return Record(
            ts=ts,
            ip=ip,
            method=_text(obj, "method"),
            path=endpoint,
            status=code,
            duration=latency / 1000 if latency else None,
            request_id=request_id,
            reason=status_text if type(status_text) is str and status_text not in ("", "success") else None,
            key_hint=hint,
        )

    return parse


def _repeats_auth_check(
    obj: dict[str, object],
    endpoint: str,
    ts: float,
    latency_ms: float,
    ip: str,
    key_name: str,
    prefix: str,
    auth_type: str,
    auth_check: _AuthCheckRows,
) -> bool:
    """Rows without request_id (before 4.x): remember the auth check's rows; True for a middleware
    row that repeats one (the module docstring has the rule)."""
    inference_route = endpoint.startswith(INFERENCE_PREFIXES)
    status = obj.get("status")
    if not latency_ms:
        if status != "no_credentials" and not inference_route:  # no token: no middleware row
            key_success = auth_type == "api_key" and status == "success"
            auth_check.add(endpoint, (ts, ip, prefix, key_success))
        return False
    if inference_route:
        return False
    since = ts - latency_ms / 1000 - PAIR_SLACK
    category = obj.get("category")
    if category == "admin" and auth_type == "jwt" and not key_name and not prefix:
        return auth_check.take(endpoint, since, ip, None)
    if category == "inference" and auth_type == "api_key":
        return auth_check.take(endpoint, since, ip, prefix)
    return False
