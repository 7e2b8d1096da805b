"""The daemon's tailers, one a source (ingest/tail.py): their read positions as the state store
keeps them, what a reload keeps of them, and when the loop wakes to read them.

The loop wakes when watchfiles reports a change in a directory a tailer watches, or after
`WAKE_EVERY` at the latest (`wakeups`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import watchfiles

from xinf_watch.config.schema import Config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.ingest.tail import FileIdentity, Position, SourceTailer

log = logging.getLogger("xinf_watch")

WAKE_EVERY = 0.25  # seconds: the longest the loop sleeps without a file event


def position_to_json(p: Position) -> dict[str, Any]:
    i = p.identity
    return {"path": p.path, "dev": i.dev, "ino": i.ino, "fingerprint": i.fingerprint,
            "fingerprint_len": i.fingerprint_len, "offset": p.offset}  # fmt: skip


def position_from_json(d: dict[str, Any]) -> Position:
    identity = FileIdentity(int(d["dev"]), int(d["ino"]), str(d["fingerprint"]), int(d["fingerprint_len"]))
    return Position(str(d["path"]), identity, int(d["offset"]))


def open_tailer(source: SourceConfig, saved: list[dict[str, Any]] | None) -> SourceTailer:
    """The tailer of `source`, from its saved positions (None: a source new to the state)."""
    positions = [position_from_json(p) for p in saved or ()]
    # A source known from an earlier run reads every file it has not seen from the start.
    start_at = "beginning" if saved is not None else source.start_at
    return SourceTailer(source.name, source.path, start_at=start_at, positions=positions,
                        log=log.warning)  # fmt: skip


def swap_tailers(tailers: Mapping[str, SourceTailer], config: Config) -> dict[str, SourceTailer]:
    """The tailers of a reloaded config: those of the sources whose path stays are kept, the others
    closed, the new sources' opened."""
    kept = {s.name: tailers[s.name] for s in config.sources if s.name in tailers
            and tailers[s.name].pattern == s.path}  # fmt: skip
    for name, tailer in tailers.items():
        if name not in kept:
            tailer.close()
    return {s.name: kept.get(s.name) or open_tailer(s, None) for s in config.sources}


def watch_dirs(tailers: Mapping[str, SourceTailer]) -> list[str]:
    dirs: set[Path] = set()
    for tailer in tailers.values():
        dirs.update(tailer.watch_paths())
    return sorted(str(d) for d in dirs if d.is_dir())


def wakeups(dirs_now: Callable[[], list[str]], stop: threading.Event,
            reloading: Callable[[], bool]) -> Iterator[set[Any]]:  # fmt: skip
    """watchfiles change sets, or an empty set every WAKE_EVERY; ends when the dirs to watch change
    (`dirs_now`), or, with none to watch, on a stop or reload request."""
    dirs = dirs_now()
    if not dirs:
        while not stop.is_set() and not reloading():
            yield set()
            stop.wait(WAKE_EVERY)
        return
    for changes in watchfiles.watch(*dirs, stop_event=stop, yield_on_timeout=True, debounce=10,
                                    step=10, rust_timeout=int(WAKE_EVERY * 1000), recursive=False,
                                    raise_interrupt=False, ignore_permission_denied=True):  # fmt: skip
        yield changes
        if dirs_now() != dirs:
            return
