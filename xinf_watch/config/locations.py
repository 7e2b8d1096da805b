"""Where rules.yaml points: file paths and URLs.

Relative paths (sources, keys, state dir, apprise config files) are made absolute against the rules
file's directory (`LoadContext.base_dir`); a value built in code, without a file, is kept as given.
`${VAR}` in notify URLs, `alertmanager.url` and `state.shared` is taken from the environment (secrets
live there); an unset variable is an error naming it. An error never shows the environment's value:
a notify URL is not shown at all (only its scheme), a Redis URL with its credentials masked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationInfo

from xinf_watch.config.context import LoadContext, context_of
from xinf_watch.config.values import fail
from xinf_watch.config.yamlsource import show

_ENV = re.compile(r"\$\{([^}]*)\}")
_USERINFO = re.compile(r"\A([^:/@]*:/*)?.*@", re.DOTALL)  # scheme: and slashes, then all up to the last @


def _resolve(value: Any, base: Path | None) -> str:
    """Absolute, against the rules file's directory; built in code (no file): as given."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or (base is not None and not value.strip()):
        return fail(f"{show(value)} is not a path (expected a file path)")
    if base is None:
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _base_dir(info: ValidationInfo | None) -> Path | None:
    ctx = info.context if info is not None else None
    return ctx.base_dir if isinstance(ctx, LoadContext) else None


def check_glob(value: Any, info: ValidationInfo | None) -> str:
    return _resolve(value, _base_dir(info))


def check_path(value: Any, info: ValidationInfo | None) -> Path:
    return Path(_resolve(value, _base_dir(info)))


def check_env(value: Any, ctx: LoadContext) -> str:
    """`${VAR}` replaced from the environment; an unset variable is named in the error."""
    if not isinstance(value, str):
        return fail(f"{show(value)} is not a string (expected a URL)")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ctx.environ:
            return fail(
                f'environment variable "{name}" is not set (expected it in xinf-watch\'s environment)'
            )
        return ctx.environ[name]

    return _ENV.sub(replace, value)


def check_notify_target(raw: str, value: str, ctx: LoadContext) -> str:
    """An apprise URL (`scheme://...`) of a scheme apprise knows, with a port in range, or the path
    of an existing apprise config file; `value` is `raw` with its ${VAR}s replaced. A URL is never
    shown in an error (it carries secrets), only its scheme."""
    if "://" in value:
        # apprise is loaded only to check a URL
        from xinf_watch.delivery.apprise_target import notify_url_problem

        problem = notify_url_problem(value)
        return value if problem is None else fail(problem)
    path = _resolve(value, ctx.base_dir)
    if not os.path.isfile(path):
        shown = "the value of " + raw if "${" in raw else show(raw)
        return fail(f"{shown} is not a file (expected an apprise URL or apprise config file)")
    return path


def check_url(value: Any, info: ValidationInfo | None) -> str:
    url = check_env(value, context_of(info))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return fail(f"{show(value)} is not an http(s) URL (expected e.g. http://127.0.0.1:9093)")
    return url


def _is_redis_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError unless a number in range (a password's unescaped / ends the host)
    except ValueError:  # and a broken [IPv6] host
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    after_host = parts.path + parts.query + parts.fragment  # an @ there: a password cut short
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname) and "@" not in after_host


def check_redis_url(value: Any, info: ValidationInfo | None) -> str:
    """redis(s)://[user:password@]host[:port][/db] or unix://path. An error shows the value as
    written (not the environment's), all between the scheme and the last `@` masked: a password
    with an unescaped / ? or # is not parsed as one (it ends the host early, and is refused)."""
    url = check_env(value, context_of(info))
    if not _is_redis_url(url):
        shown = _USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", value)
        return fail(f"{show(shown)} is not a Redis URL (expected e.g. redis://127.0.0.1:6379/0)")
    return url
