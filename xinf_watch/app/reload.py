"""What a reload (SIGHUP) builds before the daemon swaps it in (app/daemon.py).

Reload is build-then-swap: `rebuild` loads everything from the files (the config, the key files,
a pipeline that carries the running rule state over, by rule name) while the running one goes on
untouched; whatever refuses it, the daemon keeps the running config and `say_refused` says why.
Settings that only a restart applies are named when they changed (`warn_restart_only`). Also
here: key files reloaded when they change (`changed_keys`), and the firing alerts of rules a new
config no longer has (`forget_gone_rules`, at a reload and at a start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import Config, ConfigError, load_config
from xinf_watch.fleet.link import redacted
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.files import KeyFileError
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.keys.sources import KeySources
from xinf_watch.metrics.store import MetricsStore
from xinf_watch.state.store import StateStore

log = logging.getLogger("xinf_watch")


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What a reload swaps in; the running config, keys and rules are the pipeline's."""

    key_sources: KeySources
    pipeline: Pipeline

    @property
    def config(self) -> Config:
        return self.pipeline.config


def rebuild(
    rules_path: Path,
    running: Pipeline,
    store: MetricsStore,
    disabled_since: DisabledSince,
    *,
    defer_rules: bool,
) -> Rebuilt:
    """The config, keys and pipeline from the files; raises whatever refuses them."""
    config = load_config(rules_path)
    key_sources = KeySources(config.keys, config.key_sites, disabled_since=disabled_since)
    registry = key_sources.load()
    # rule state carries over, by rule name
    pipeline = Pipeline.build(config, registry, store, rule_state=running.engine.snapshot(),
                              partial_lines=running.partial_lines(), defer_rules=defer_rules)  # fmt: skip
    return Rebuilt(key_sources, pipeline)


def say_refused(exc: Exception) -> None:
    """Log why a reload was refused: the config's and key files' own message, else the error's."""
    why = str(exc) if isinstance(exc, ConfigError | KeyFileError) else f"{type(exc).__name__}: {exc}"
    lines = why.splitlines() or [why]  # one argument a line: each escaped, the breaks kept
    log.error("reload failed, keeping the running config:" + "\n%s" * len(lines), *lines)


def warn_restart_only(old: Config, new: Config) -> None:
    """Say which settings changed that take effect at the next start only."""
    for what, before, after in (("metrics.listen", old.metrics.listen, new.metrics.listen),
                                ("state.dir", old.state.dir, new.state.dir),
                                ("state.shared", old.state.shared, new.state.shared),
                                ("state.instance", old.state.instance, new.state.instance)):  # fmt: skip
        if before != after:
            if what == "state.shared":  # its password stays out of the log
                before, after = (redacted(str(u)) if u else u for u in (before, after))
            log.warning("reload: %s changed (%s -> %s): takes effect at the next start", what, before, after)


def changed_keys(key_sources: KeySources) -> KeyRegistry | None:
    """The keys when the key files changed, else None; files that changed but cannot be loaded
    leave the previous keys in place, and say why."""
    try:
        return key_sources.reload_if_changed()
    except KeyFileError as exc:
        log.error("key files changed but cannot be loaded, keeping the previous keys: %s", exc)
        return None


def forget_gone_rules(state: StateStore, config: Config) -> None:
    """Firing alerts of a rule removed (or changed kind) since get no resolution: stop re-sending
    them, so Alertmanager ends them at their last endsAt."""
    rules = {(r.name, r.kind) for r in config.rules}
    n = state.keep_firing(lambda a: (a.get("rule"), a.get("kind")) in rules)
    if n:
        log.warning("%d firing alerts belong to rules no longer configured (or of another kind):"
                    " no longer re-sent to Alertmanager", n)  # fmt: skip
