"""Key files of a running daemon: reloaded, whole, when one of them changes.

Reloading (`KeySources`): `changed()` compares a stat signature (device, inode, size, mtime,
ctime of every file and of auth.db's `-wal`) with the one taken before the last load, so a change
during a load is seen next time. A file modified within `RACY_NS` of a load may change again
within the same mtime tick unseen, so it is looked at once more. `reload_if_changed()` builds the
new registry whole and returns it, or None when nothing changed or the result is the same
registry (Xinference writes auth.db at every login). Broken files raise `KeyFileError` (every
one of them; one that cannot be opened at the rules.yaml line naming it) and are not read again
until they change, unless an error was transient (auth.db busy): then the next call tries again.
Either way the caller keeps its registry.
Every load tells `disabled_since` (keydates.py) what auth.db shows disabled, at the clock's time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from xinf_watch.authdb import wal_path
from xinf_watch.keydates import DisabledSince
from xinf_watch.keyfiles import KeyFileError, load_registry
from xinf_watch.keys import KeyRegistry

RACY_NS = 2_000_000_000
_Signature = tuple[tuple[int, int, int, int, int] | None, ...]


class KeySources:
    """The key files of a running daemon: loaded whole, reloaded when their stat signature changes."""

    def __init__(
        self,
        paths: Sequence[Path],
        named_at: Sequence[str] = (),
        *,
        clock: Callable[[], int] = time.time_ns,
        disabled_since: DisabledSince | None = None,
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.named_at = tuple(named_at)  # where rules.yaml names each path, for errors
        self._clock = clock
        self.disabled_since = disabled_since
        self._seen: _Signature | None = None  # signature of the last load, good or broken
        self._again = False  # look again although the signature is the same (racy or transient)
        self._current: KeyRegistry | None = None

    def load(self) -> KeyRegistry:
        """Load every file now (raises KeyFileError); the result is what later reloads compare to."""
        started, seen = self._clock(), self._signature()
        try:
            registry = load_registry(
                self.paths, self.named_at, disabled_since=self.disabled_since, now=started / 1e9
            )
        except KeyFileError as e:
            self._seen, self._again = seen, e.transient
            raise
        self._seen, self._current = seen, registry
        self._again = any(s is not None and s[3] >= started - RACY_NS for s in seen)  # mtime
        return registry

    def changed(self) -> bool:
        """Cheap: one stat per file (and per -wal); True also before the first load."""
        return self._seen is None or self._again or self._signature() != self._seen

    def reload_if_changed(self) -> KeyRegistry | None:
        """A new registry, or None (nothing changed, or the same keys); raises KeyFileError."""
        if not self.changed():
            return None
        old, new = self._current, self.load()
        if old is not None and new.entries == old.entries and new.users == old.users:
            return None
        return new

    def _signature(self) -> _Signature:
        return tuple(_stat(p) for path in self.paths for p in (path, wal_path(path)))


def _stat(path: Path) -> tuple[int, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
