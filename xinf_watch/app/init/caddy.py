"""Caddyfiles for `init`: the site that reverse-proxies to Xinference, its `log` and `log_credentials`.

A Caddyfile is line-based: a directive is the tokens of one line (a trailing `\\` continues it),
a line ending in `{` opens its block and a `}` closes it; tokens are split on spaces, `"..."` and
backquotes quote, `#` starts a comment. An optional global options block `{ ... }` comes first,
`(name) { ... }` blocks are snippets, everything else is a site block (or, without braces, the one
site of the file). `import` of snippets and of files (relative to the Caddyfile) is expanded.
Caddy writes an access log only for a site with a `log` directive; its default output is stderr,
and `format json` (the default for files) is what the `caddy` json preset reads. Caddy redacts
the Authorization header unless the `log_credentials` option is on for the site's server
(`servers [listener] { log_credentials }` in the global options).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xinf_watch.app.init.gateway import Fix, GatewayLog, InitError, Upstream, split_host_port

DEFAULT_LOG = "/var/log/caddy/xinference.access.log"
_SCHEME = re.compile(r"^([a-z0-9+]+)://", re.IGNORECASE)
_MAX_IMPORT_DEPTH = 16


@dataclass(slots=True)
class Node:
    name: str
    args: list[str]
    file: str
    line: int
    block: list[Node] | None = None
    words: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def children(self, name: str) -> list[Node]:
        return [n for n in self.block or () if n.name == name]


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    line: int  # where it starts, for messages
    group: int  # the logical line it belongs to
    quoted: bool

    def is_(self, text: str) -> bool:
        return not self.quoted and self.text == text


def _tokens(text: str, file: str) -> list[_Token]:
    out: list[_Token] = []
    i, n, line, group = 0, len(text), 1, 0
    while i < n:
        c = text[i]
        if c == "\\" and text.startswith("\n", i + 1):  # line continuation
            i, line = i + 2, line + 1
        elif c.isspace():
            if c == "\n":
                line, group = line + 1, group + 1
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in '"`':
            start = line
            token, i, line = _quoted(text, i, line, file)
            out.append(_Token(token, start, group, True))
        else:
            start_i = i
            while i < n and not text[i].isspace():
                i += 1
            out.append(_Token(text[start_i:i], line, group, False))
    return out


def _quoted(text: str, i: int, line: int, file: str) -> tuple[str, int, int]:
    """The string quoted at text[i] (`\\"` inside `"..."` is a quote): (it, index and line after it)."""
    c, n = text[i], len(text)
    start, chars = line, []
    i += 1
    while True:
        if i >= n:
            raise InitError(f"{file}:{start}: unterminated quoted string")
        ch = text[i]
        if c == '"' and ch == "\\" and text.startswith('"', i + 1):
            chars.append('"')
            i += 2
            continue
        i += 1
        if ch == c:
            break
        line += ch == "\n"
        chars.append(ch)
    return "".join(chars), i, line


def parse(text: str, file: str) -> list[Node]:
    """One Caddyfile's lines as nodes; InitError (file:line) on unbalanced braces."""
    tokens = _tokens(text, file)
    nodes, end = _block(tokens, 0, file, None)
    assert end == len(tokens)
    return nodes


def _block(tokens: list[_Token], i: int, file: str, opened: int | None) -> tuple[list[Node], int]:
    nodes: list[Node] = []
    while i < len(tokens):
        if tokens[i].is_("}"):
            if opened is None:
                raise InitError(f'{file}:{tokens[i].line}: unexpected "}}"')
            return nodes, i + 1
        j = i
        while j < len(tokens) and tokens[j].group == tokens[i].group and not tokens[j].is_("}"):
            j += 1
        words = tokens[i:j]
        block = None
        if words[-1].is_("{"):
            block, j = _block(tokens, j, file, words[-1].line)
            words = words[:-1]
        texts = [w.text for w in words]
        nodes.append(Node(texts[0] if texts else "", texts[1:], file, tokens[i].line, block, texts))
        i = j
    if opened is not None:
        raise InitError(f"{file}:{opened}: unexpected end of file: this block is not closed")
    return nodes, i


def load_file(path: Path) -> list[Node]:
    """A Caddyfile with its snippets and imports expanded."""
    text = _read(str(path))
    nodes = parse(text, str(path))
    snippets = {n.name[1:-1]: n.block or [] for n in nodes if n.name.startswith("(") and n.name.endswith(")")}
    return _expand(nodes, snippets, str(path.parent), 0)


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise InitError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None


def _expand(nodes: list[Node], snippets: dict[str, list[Node]], base: str, depth: int) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        if n.name == "import" and n.args:
            if depth >= _MAX_IMPORT_DEPTH:
                raise InitError(f"{n.where}: import nested too deep (an import loop?)")
            if n.args[0] in snippets:
                out += _expand(snippets[n.args[0]], snippets, base, depth + 1)
                continue
            pattern = os.path.join(base, n.args[0])
            for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                out += _expand(parse(_read(path), path), snippets, base, depth + 1)
            continue
        if n.block is not None:
            n.block = _expand(n.block, snippets, base, depth)
        out.append(n)
    return out


@dataclass(frozen=True, slots=True)
class _Site:
    node: Node
    addresses: list[str]
    directives: list[Node]

    @property
    def port(self) -> str:
        for address in self.addresses:
            scheme = _SCHEME.match(address)
            rest = address[scheme.end() :] if scheme else address
            hp = split_host_port(rest.split("/")[0], 80 if scheme and scheme.group(1) == "http" else 443)
            if hp:
                return str(hp[1])
        return "443"


def _sites(nodes: list[Node]) -> tuple[Node | None, list[_Site]]:
    """(global options block, site blocks)."""
    rest = [n for n in nodes if not (n.name.startswith("(") and n.name.endswith(")"))]
    options = rest.pop(0) if rest and not rest[0].words and rest[0].block is not None else None
    if rest and rest[0].block is None:  # one site without braces: its address, then its directives
        return options, [_Site(rest[0], _addresses(rest[0].words), rest[1:])]
    return options, [_Site(n, _addresses(n.words), n.block or []) for n in rest if n.block is not None]


def _addresses(words: list[str]) -> list[str]:
    return [a for w in words for a in w.split(",") if a]


def _walk(nodes: list[Node]) -> Iterator[Node]:
    for n in nodes:
        yield n
        yield from _walk(n.block or [])


def _upstreams(proxy: Node) -> list[tuple[str, int]]:
    words = [a for a in proxy.args if not a.startswith(("@", "/", "*"))]
    words += [a for to in proxy.children("to") for a in to.args]
    out = []
    for word in words:
        scheme = _SCHEME.match(word)
        rest = word[scheme.end() :] if scheme else word
        default = 443 if scheme and scheme.group(1).lower() == "https" else 80
        hp = split_host_port(rest.split("/")[0], default)
        if hp:
            out.append(hp)
    return out


def find_logs(nodes: list[Node], upstream: Upstream, file: str) -> list[GatewayLog]:
    """A GatewayLog for each site that reverse-proxies to `upstream`; InitError if none."""
    options, sites = _sites(nodes)
    found: list[GatewayLog] = []
    seen: list[str] = []
    for site in sites:
        proxies = [n for n in _walk(site.directives) if n.name == "reverse_proxy"]
        seen += [f"{' '.join(p.args)} at {p.where}" for p in proxies]
        if any(upstream.matches(h, p) for proxy in proxies for h, p in _upstreams(proxy)):
            found.append(_site_log(site, options, file))
    if not found:
        what = "; reverse_proxy seen: " + ", ".join(seen[:5]) if seen else ": no reverse_proxy at all"
        raise InitError(f"{file}: no site reverse-proxies to Xinference ({upstream}){what}")
    return found


def _site_log(site: _Site, options: Node | None, file: str) -> GatewayLog:
    label = site.port
    fixes: list[Fix] = []
    notes: list[str] = []
    log = next((n for n in site.directives if n.name == "log"), None)
    path = DEFAULT_LOG
    if log is None:
        fixes.append(
            Fix(
                f"the site block ({site.node.where})",
                f"log {{\n    output file {DEFAULT_LOG}\n    format json\n}}",
            )
        )
    else:
        path = _log_output(log, file, fixes)
        notes += _log_format(log, fixes)
    fixes += _credentials_fix(site, options, file)
    return GatewayLog(
        "caddy",
        site.node.where,
        label,
        path,
        {"format": "json", "preset": "caddy"},
        fix=tuple(fixes),
        reload=f"caddy validate --config {file} && systemctl reload caddy" if fixes else "",
        notes=tuple(notes),
    )


def _log_output(log: Node, file: str, fixes: list[Fix]) -> str:
    """The file a `log` block writes; DEFAULT_LOG, with a fix appended, when it writes no file."""
    output = next((n for n in log.children("output")), None)
    if output is not None and output.args[:1] == ["file"] and len(output.args) > 1:
        return os.path.join(os.path.dirname(file), output.args[1])
    fixes.append(Fix(f"the log block ({log.where})", f"output file {DEFAULT_LOG}"))
    return DEFAULT_LOG


def _log_format(log: Node, fixes: list[Fix]) -> list[str]:
    """Appends a fix when a `log` block's format is not json; notes on a filter that drops the key."""
    fmt = next((n for n in log.children("format")), None)
    if fmt is None:
        return []
    if fmt.args[:1] not in (["json"], ["filter"]):
        fixes.append(Fix(f"the log block ({log.where}), instead of {fmt.where}", "format json"))
    if any("request>headers>authorization" in a.lower() for n in _walk(fmt.block or []) for a in n.words):
        return [f"{fmt.where}: the log filter removes request>headers>Authorization: drop that line"]
    return []


def _credentials_fix(site: _Site, options: Node | None, file: str) -> list[Fix]:
    """What turns `log_credentials` on for the site's server: nothing when it is on already."""
    bind = next((n.args[0] for n in site.directives if n.name == "bind" and n.args), "")
    servers = [n for n in (options.children("servers") if options else []) if _serves(n, site.port)]
    if any(n.children("log_credentials") for n in servers):
        return []
    if servers:
        return [Fix(f"the servers block of the global options ({servers[0].where})", "log_credentials")]
    server = f"servers {bind}:{site.port} {{\n    log_credentials\n}}"
    if options is not None:
        return [Fix(f"the global options block ({options.where})", server)]
    block = "{\n" + "\n".join("    " + line for line in server.splitlines()) + "\n}"
    return [Fix(f"a global options block at the very top of {file}", block)]


def _serves(servers: Node, port: str) -> bool:
    """A `servers [listener]` option applies to the site's server: no listener, or the same port."""
    return not servers.args or servers.args[0].rpartition(":")[2] == port
