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
A text key file (keys.yaml, auth.json) is read only once it has not changed for `SETTLE_NS`: an
editor or a script that truncates it and then writes it (not atomically, by rename) would
otherwise be read half-written, and every key of the missing half would count as unknown.
auth.db is read at once: SQLite's transactions are already whole.
Every load tells `disabled_since` (keys/dates.py) what auth.db shows disabled, at the clock's time.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from xinf_watch.keys.authdb import SQLITE_MAGIC, wal_path
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import KeyRegistry

RACY_NS = 2_000_000_000
SETTLE_NS = 1_000_000_000
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
        if self._settling():
            self._again = True  # look again at the next check
            return None
        old, new = self._current, self.load()
        if old is not None and new.entries == old.entries and new.users == old.users:
            return None
        return new

    def _settling(self) -> bool:
        """Whether a text key file changed within the last `SETTLE_NS` (a future mtime counts as old:
        a clock that disagrees must not hold the keys back for ever)."""
        now = self._clock()
        for path in self.paths:
            st = _stat(path)
            if st is not None and 0 <= now - st[3] < SETTLE_NS and not _is_sqlite(path):
                return True
        return False

    def _signature(self) -> _Signature:
        return tuple(_stat(p) for path in self.paths for p in (path, wal_path(path)))


def _is_sqlite(path: Path) -> bool:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
            return False
        with path.open("rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _stat(path: Path) -> tuple[int, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
