"""haproxy.cfg (and the rsyslog rule behind it) for `init`: the frontend that reaches Xinference.

haproxy.cfg is line-based: a section starts with `global`, `defaults`, `frontend`, `backend` or
`listen` (others are skipped); `#` starts a comment; quotes and backslashes escape. Xinference's
backend is the one with a `server` on the upstream's address; its frontends are those whose
`default_backend` or `use_backend` names it (or a `listen` section with the server itself). A
frontend inherits `option httplog` and `log` from the last `defaults` before it; `log global`
means the global section's targets. Captured request headers appear in the log in the order they
are declared (`capture request header X len N` and `http-request capture req.hdr(X) len N` alike),
which is what the haproxy format's `captures` must list. HAProxy logs through syslog (or stdout);
the file is wherever the syslog daemon writes the `haproxy` program's lines: an rsyslog config
(`:programname, startswith, "haproxy"` rules, or the log facility) says where.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from xinf_watch.app.init.gateway import Fix, GatewayLog, InitError, Upstream, split_host_port

DEFAULT_LOG = "/var/log/haproxy.log"  # Debian's /etc/rsyslog.d/49-haproxy.conf
CAPTURE = "capture request header Authorization len 256"
_SECTIONS = frozenset({"global", "defaults", "frontend", "backend", "listen"})
_OTHER_SECTIONS = frozenset(
    {
        "userlist",
        "peers",
        "resolvers",
        "program",
        "http-errors",
        "ring",
        "cache",
        "mailers",
        "crt-store",
        "traces",
        "log-forward",
    }
)
_HEADER = re.compile(r"(?i)^(?:req\.)?hdr\(\s*([^,)\s]+)")
_FILE = re.compile(r"""(?:^|\s)-?(/[^\s;"'{}]+)|file\s*=\s*"([^"]+)\"""")


@dataclass(slots=True)
class Section:
    kind: str
    name: str
    file: str
    line: int
    lines: list[tuple[list[str], int]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def get(self, *keyword: str) -> list[tuple[list[str], int]]:
        return [(w, n) for w, n in self.lines if tuple(w[: len(keyword)]) == keyword]


def parse(text: str, file: str) -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            lexer = shlex.shlex(raw, posix=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            words = list(lexer)
        except ValueError as e:
            raise InitError(f"{file}:{number}: {e}") from None
        if not words:
            continue
        if words[0] in _SECTIONS or words[0] in _OTHER_SECTIONS:
            sections.append(Section(words[0], words[1] if len(words) > 1 else "", file, number))
        elif not sections:
            raise InitError(
                f"{file}:{number}: {words[0]!r} outside of a section "
                "(expected global, defaults, frontend, backend or listen first)"
            )
        else:
            sections[-1].lines.append((words, number))
    return sections


def load_file(path: Path) -> list[Section]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise InitError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    return parse(text, str(path))


def find_logs(
    sections: list[Section], upstream: Upstream, syslog: tuple[str, str] | None = None
) -> list[GatewayLog]:
    """A GatewayLog per frontend that reaches `upstream`; `syslog` is (file, where) from rsyslog."""
    backends = {s.name for s in sections if s.kind in ("backend", "listen") and _has_server(s, upstream)}
    found: list[GatewayLog] = []
    defaults: Section | None = None
    for s in sections:
        if s.kind == "defaults":
            defaults = s
        if s.kind in ("frontend", "listen") and _reaches(s, defaults, backends):
            found.append(_frontend_log(s, defaults, sections, syslog))
    if not found:
        raise _nothing_reaches(sections, upstream)
    return found


def _reaches(front: Section, defaults: Section | None, backends: set[str]) -> bool:
    """Whether a frontend or listen section sends to one of `backends` (or is one of them)."""
    names = [w[1] for w, _ in front.get("default_backend") + front.get("use_backend") if len(w) > 1]
    names += [w[1] for w, _ in (defaults.get("default_backend") if defaults else []) if len(w) > 1]
    return (front.kind == "listen" and front.name in backends) or bool(backends & set(names))


def _nothing_reaches(sections: list[Section], upstream: Upstream) -> InitError:
    servers = [f"{w[2]} at {s.file}:{n}" for s in sections for w, n in s.get("server") if len(w) > 2]
    what = "; servers seen: " + ", ".join(servers[:5]) if servers else ": no server line at all"
    origin = sections[0].file if sections else "haproxy.cfg"
    return InitError(f"{origin}: no frontend reaches a server of Xinference ({upstream}){what}")


def _has_server(section: Section, upstream: Upstream) -> bool:
    for words, _ in section.get("server"):
        address = words[2].rpartition("@")[2] if len(words) > 2 else ""
        hp = split_host_port(address, 80)
        if hp and upstream.matches(*hp):
            return True
    return False


def _setting(front: Section, defaults: Section | None, keyword: str) -> list[tuple[list[str], int]]:
    own = [(w, n) for w, n in front.lines if _about(w, keyword)]
    return own or ([(w, n) for w, n in defaults.lines if _about(w, keyword)] if defaults else [])


def _about(words: list[str], keyword: str) -> bool:
    rest = words[1:] if words[0] == "no" else words
    return " ".join(rest).startswith(keyword)


def _frontend_log(
    front: Section, defaults: Section | None, sections: list[Section], syslog: tuple[str, str] | None
) -> GatewayLog:
    fixes: list[Fix] = []
    notes: list[str] = []
    where = f"the {front.kind} section ({front.where})"
    httplog = _setting(front, defaults, "option httplog") + _setting(front, defaults, "option tcplog")
    log_format = _setting(front, defaults, "log-format")
    if log_format:
        notes.append(
            f"{front.file}:{log_format[-1][1]}: a custom log-format: remove it, xinf-watch reads "
            "the option httplog format"
        )
    last = httplog[-1][0] if httplog else []
    if last[:2] != ["option", "httplog"] or "clf" in last:
        fixes.append(Fix(where, "option httplog"))
    captures = _captures(front)
    if "authorization" not in (c.lower() for c in captures):
        fixes.append(Fix(f"{where}, after its other capture lines", CAPTURE))
        captures.append("Authorization")
    path, log_note, log_fixes = _log_file(front, defaults, sections, syslog)
    notes += [log_note] if log_note else []
    fixes += log_fixes
    source: dict[str, object] = {"format": "haproxy", "fields": {"captures": "|".join(captures)}}
    return GatewayLog(
        "haproxy",
        front.where,
        front.name,
        path,
        source,
        fix=tuple(fixes),
        reload=f"haproxy -c -f {front.file} && systemctl reload haproxy" if fixes else "",
        notes=tuple(notes),
    )


def _captures(front: Section) -> list[str]:
    names: list[str] = []
    for words, _ in front.lines:
        if words[:3] == ["capture", "request", "header"] and len(words) > 3:
            names.append(words[3])
        elif words[:2] == ["http-request", "capture"] and len(words) > 2 and "len" in words:
            m = _HEADER.match(words[2])
            names.append(m.group(1) if m else f"sample-{len(names) + 1}")
    return names


def _log_file(
    front: Section, defaults: Section | None, sections: list[Section], syslog: tuple[str, str] | None
) -> tuple[str, str | None, list[Fix]]:
    """(the log file, a note, fixes) for the frontend's log targets."""
    glob_section = next((s for s in sections if s.kind == "global"), None)
    targets = _targets(front, defaults, glob_section)
    to_syslog = [t for t in targets if not t.startswith(("stdout", "stderr", "fd@", "ring@"))]
    if to_syslog:
        if syslog is not None:
            return syslog[0], f"syslog writes HAProxy's lines to {syslog[0]} ({syslog[1]})", []
        return (
            DEFAULT_LOG,
            (
                f"HAProxy logs to syslog ({to_syslog[0]}); assumed written to {DEFAULT_LOG} "
                "(Debian's rsyslog rule); give --rsyslog-config to read the rule"
            ),
            [],
        )
    where = f"the global section ({glob_section.where})" if glob_section else "a global section"
    note = "HAProxy logs only to stdout/stderr (the journal)" if targets else "HAProxy logs nowhere"
    return (
        DEFAULT_LOG,
        note + f"; syslog (rsyslog on Debian) writes {DEFAULT_LOG}",
        [Fix(where, "log /dev/log local0")],
    )


def _targets(front: Section, defaults: Section | None, glob_section: Section | None) -> list[str]:
    for section in (front, defaults):
        if section is None:
            continue
        if section.get("no", "log"):
            return []
        lines = section.get("log")
        if lines:
            targets = []
            for words, _ in lines:
                if words[1:2] == ["global"]:
                    targets += [
                        w[1] for w, _ in (glob_section.get("log") if glob_section else []) if len(w) > 1
                    ]
                elif len(words) > 1:
                    targets.append(words[1])
            return targets
    return []


def rsyslog_file(path: Path, facility: str = "local0") -> tuple[str, str] | None:
    """(file, file:line) where an rsyslog config writes the haproxy program's (or facility's) lines."""
    try:
        lines = [
            line.split("#", 1)[0].strip() for line in path.read_bytes().decode(errors="replace").splitlines()
        ]
    except OSError as e:
        raise InitError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    for number, text in enumerate(lines, 1):
        words = text.split(None, 1)
        if text.startswith((":programname", ":syslogtag", "if ")) and "haproxy" in text.lower():
            after = text[text.lower().rindex("haproxy") + len("haproxy") :]
            for candidate in [after, *lines[number : number + 10]]:
                m = _FILE.search(candidate)
                if m:
                    return os.path.normpath(m.group(1) or m.group(2)), f"{path}:{number}"
                if "}" in candidate:
                    break
        elif len(words) == 2 and f"{facility}." in words[0] and (m := _FILE.search(" " + words[1])):
            return os.path.normpath(m.group(1) or m.group(2)), f"{path}:{number}"
    return None
