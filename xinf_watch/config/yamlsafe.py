"""Composing YAML that someone else may have written: rules.yaml and key files, within limits.

`compose(text)` returns the document's node graph, or raises `yaml.MarkedYAMLError` (a
`RefusedYAML` for the limits and for bad characters, with the line) for anything xinf-watch
will not read. Both loaders (`yamlsource` for rules.yaml, `keyfiles` for key files) go through it, so a
bad file is one clear error line, never a crash or a runaway:
- characters YAML does not allow (NUL, ESC...): PyYAML raises them from the loader's constructor,
  outside its callers' error handling, as a multi-line `ReaderError`;
- nesting deeper than `MAX_DEPTH` (1,000 `[` would exhaust Python's recursion in the composer);
- more than `MAX_ALIASES` aliases, or a document whose values, with every alias expanded, number
  more than `MAX_VALUES` (an alias bomb: a 1 KB file that expands to 10^8 items);
- text longer than `MAX_CHARS`.
Real configs and key files are far inside every limit.
"""

from __future__ import annotations

import yaml

MAX_CHARS = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_VALUES = 200_000


class RefusedYAML(yaml.MarkedYAMLError):
    """The document is over one of the limits above, or has a character YAML does not allow;
    `problem` says which, `problem_mark` where (a one-line message, unlike PyYAML's own)."""


class _LimitedLoader(yaml.SafeLoader):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise self._over(f"more than {MAX_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._over(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _over(self, problem: str) -> RefusedYAML:
        return RefusedYAML(None, None, problem, self.peek_event().start_mark)  # type: ignore[no-untyped-call]


def compose(text: str) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    """The single document of `text` as nodes, and the loader (to construct values with; the
    caller disposes of it). Raises `yaml.YAMLError` subclasses only."""
    if len(text) > MAX_CHARS:
        raise RefusedYAML(None, None, f"longer than {MAX_CHARS // (1024 * 1024)} MiB", None)
    try:
        loader = _LimitedLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        mark = yaml.Mark("<text>", exc.position, line - 1, column, None, 0)  # no snippet: it may hold a key
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise RefusedYAML(None, None, f"character {character} is not allowed in YAML", mark) from None
    node = loader.get_single_node()
    if node is not None:
        _check_expanded_size(node)
    return node, loader


def _check_expanded_size(root: yaml.Node) -> None:
    """How many values the document holds with every alias expanded, counted without expanding:
    each distinct node once, its size remembered (aliases make the graph a DAG)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        sizes[id(node)] = total
        if total > MAX_VALUES:
            raise RefusedYAML(
                None, None, f"expands to more than {MAX_VALUES:,} values (an alias bomb?)", node.start_mark
            )
        return total

    size(root)
