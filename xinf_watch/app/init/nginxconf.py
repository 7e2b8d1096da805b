"""Reading nginx configs for `init`: directives, blocks and includes, as nginx reads them.

Reads a config file, following `include`s (relative ones against the main file's directory, as
nginx resolves them against its conf prefix), or the dump of `nginx -T` (every file nginx loaded,
each after a `# configuration file PATH:` line). Tokens follow nginx's own rules: `;` ends a
directive, `{` `}` a block, quotes with backslash escapes, `#` comments. What the directives say
about Xinference's logs is nginx.py's.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from xinf_watch.app.init.gateway import InitError

_CONFIG_MARK = re.compile(r"^# configuration file (.+):$", re.MULTILINE)
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_MAX_INCLUDE_DEPTH = 16


@dataclass(slots=True)
class Directive:
    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def children(self, name: str) -> list[Directive]:
        return [d for d in self.block or () if d.name == name]


def _tokens(text: str, file: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, quoted); `;`, `{`, `}` are tokens of their own when not quoted."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c.isspace():
            line += c == "\n"
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in ";{}":
            yield c, line, False
            i += 1
        elif c in "\"'":
            token, start, i, line = _quoted(text, i, line, file)
            yield token, start, True
        else:
            start_i, i = i, _word_end(text, i)
            yield text[start_i:i], line, False


def _quoted(text: str, i: int, line: int, file: str) -> tuple[str, int, int, int]:
    """The string quoted at text[i] with its escapes undone: (it, its line, index and line after it)."""
    c, n = text[i], len(text)
    start, chars = line, []
    i += 1
    while True:
        if i >= n:
            raise InitError(f"{file}:{start}: unterminated {c}-quoted string")
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            chars.append(_ESCAPES.get(text[i + 1], ch + text[i + 1]))
            line += text[i + 1] == "\n"
            i += 2
            continue
        i += 1
        if ch == c:
            break
        line += ch == "\n"
        chars.append(ch)
    return "".join(chars), start, i, line


def _word_end(text: str, i: int) -> int:
    """Where the unquoted word at text[i] ends."""
    n = len(text)
    while i < n and not text[i].isspace() and text[i] not in ";{}\"'":
        if text.startswith("${", i):  # ${var}: its braces are not a block
            end = text.find("}", i)
            i = n if end < 0 else end + 1
        else:
            i += 1
    return i


def parse(text: str, file: str) -> list[Directive]:
    """One file's directives; InitError (file:line) on nginx syntax errors."""
    stack: list[list[Directive]] = [[]]
    opened: list[int] = []
    words: list[str] = []
    first = 0
    for token, line, quoted in _tokens(text, file):
        if quoted or token not in ";{}":
            if not words:
                first = line
            words.append(token)
        elif token == "}":
            if words:
                raise InitError(f'{file}:{first}: directive "{words[0]}" is not terminated by ";"')
            if not opened:
                raise InitError(f'{file}:{line}: unexpected "}}"')
            stack.pop()
            opened.pop()
        elif not words:
            raise InitError(f'{file}:{line}: unexpected "{token}"')
        else:
            directive = Directive(words[0], words[1:], file, first, [] if token == "{" else None)
            stack[-1].append(directive)
            if directive.block is not None:
                stack.append(directive.block)
                opened.append(first)
            words = []
    if words:
        raise InitError(f'{file}:{first}: unexpected end of file, expecting ";" or "}}"')
    if opened:
        raise InitError(f"{file}:{opened[-1]}: unexpected end of file: this block is not closed")
    return stack[0]


class _Files:
    """Where included files come from: the disk, or the files of an `nginx -T` dump."""

    def __init__(self, dump: dict[str, str] | None = None) -> None:
        self.dump = dump

    def read(self, path: str) -> str:
        if self.dump is not None and path in self.dump:
            return self.dump[path]
        try:
            return Path(path).read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise InitError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None

    def glob(self, pattern: str) -> list[str]:
        if self.dump is not None:
            return sorted(p for p in self.dump if fnmatch.fnmatchcase(p, pattern))
        return sorted(glob.glob(pattern))


def _expand(directives: list[Directive], files: _Files, conf_dir: str, depth: int = 0) -> list[Directive]:
    out: list[Directive] = []
    for d in directives:
        if d.name == "include" and d.block is None and d.args:
            if depth >= _MAX_INCLUDE_DEPTH:
                raise InitError(f"{d.where}: include nested too deep (an include loop?)")
            pattern = os.path.join(conf_dir, d.args[0])
            paths = files.glob(pattern) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                out += _expand(parse(files.read(path), path), files, conf_dir, depth + 1)
            continue
        if d.block is not None:
            d.block = _expand(d.block, files, conf_dir, depth)
        out.append(d)
    return out


def load_file(path: Path) -> list[Directive]:
    """A config file with its includes expanded."""
    files = _Files()
    return _expand(parse(files.read(str(path)), str(path)), files, str(path.parent))


def load_dump(text: str, origin: str = "nginx -T") -> tuple[list[Directive], str]:
    """The output of `nginx -T` (the first file is the main config, the others its includes), and
    the main file's directory."""
    marks = list(_CONFIG_MARK.finditer(text))
    if not marks:
        raise InitError(f"{origin}: no '# configuration file' in its output (is this nginx -T?)")
    dump = {
        m.group(1): text[m.end() + 1 : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, m in enumerate(marks)
    }
    main = marks[0].group(1)
    files = _Files(dump)
    return _expand(parse(dump[main], main), files, os.path.dirname(main)), os.path.dirname(main)


def run_dump(command: Sequence[str]) -> str:
    """Run `nginx -T` (or the given command) and return its output."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InitError(f"{' '.join(command)}: could not run it ({e})") from None
    if done.returncode != 0 and not _CONFIG_MARK.search(done.stdout):
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise InitError(f"{' '.join(command)}: {last}")
    return done.stdout
