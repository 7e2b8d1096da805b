#!/usr/bin/env python3
"""Alert quality: the shipped rules replayed over simulated weeks with known incidents, every alert scored.

For each seed: `xinf_watch.simulate.run` writes a week (or --days) of nginx traffic in front of
Xinference, its keys.yaml, the rules (--rules, default rules/rules.yaml, pointed at those files)
and the ground truth into a temporary directory; the log is replayed through the same stages as
`xinf-watch replay`; `xinf_watch.simulate.score` scores every firing alert against the truth.

Prints, per seed and in total, per rule: firing alerts, true positives, false positives, expected
notices, incidents caught / incidents the rule is a catching rule of, false alerts per day; then
the false positives (the --top noisiest rule and group pairs, with an example) and the missed
incidents. Always exits 0: it is a measurement, not a test (tests/test_alert_quality.py is).

    python bench/alert_quality.py --days 7 --seeds 1 2 3
    python bench/alert_quality.py --rules my-rules.yaml --json > quality.json
    python bench/alert_quality.py --seeds 4 --keep /tmp/week4     # keep the files to look at
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xinf_watch.app.replay import replay_alerts
from xinf_watch.simulate.run import simulate, write_simulation
from xinf_watch.simulate.score import RuleScore, Score, score

REPO = Path(__file__).resolve().parent.parent
SHIPPED_RULES = REPO / "rules" / "rules.yaml"


def run_seed(seed: int, days: int, rules: Path, directory: Path) -> tuple[Score, dict[str, Any]]:
    started = time.perf_counter()
    sim = simulate(days, seed)
    write_simulation(sim, directory, rules)
    generated = time.perf_counter()
    alerts = replay_alerts(directory / "rules.yaml")
    replayed = time.perf_counter()
    result = score(alerts, sim.truth())
    info = {
        "seed": seed,
        "lines": len(sim.lines),
        "generate_s": round(generated - started, 1),
        "replay_s": round(replayed - generated, 1),
    }
    return result, info


def table(result: Score) -> list[str]:
    rows = [f"  {'rule':<26} {'firing':>6} {'TP':>4} {'FP':>5} {'notice':>6} {'caught':>7} {'FP/day':>7}"]
    for name, r in sorted(result.rules.items()):
        caught = f"{len(r.caught)}/{r.listed}" if r.listed else "-"
        rows.append(
            f"  {name:<26} {r.firing:>6} {r.true_positives:>4} {r.false_positives:>5} {r.notices:>6} "
            f"{caught:>7} {r.false_positives / result.days:>7.2f}"
        )
    total = RuleScore("all")
    for r in result.rules.values():
        total.add(r)
    rows.append(
        f"  {'all rules':<26} {total.firing:>6} {total.true_positives:>4} {total.false_positives:>5} "
        f"{total.notices:>6} {len(result.caught):>4}/{result.incidents:<2} "
        f"{total.false_positives / result.days:>7.2f}"
    )
    return rows


def merge(results: Sequence[Score]) -> Score:
    rules: dict[str, RuleScore] = {}
    for result in results:
        for name, r in result.rules.items():
            rules.setdefault(name, RuleScore(name)).add(r)
    return Score(
        sum(r.days for r in results),
        sum(r.incidents for r in results),
        rules,
        [c for r in results for c in r.caught],
        [m for r in results for m in r.missed],
        [f for r in results for f in r.false_positives],
    )


def noisiest(result: Score, top: int) -> list[str]:
    groups = Counter((a["rule"], json.dumps(a["group"], sort_keys=True)) for a in result.false_positives)
    example: dict[tuple[str, str], dict[str, Any]] = {}
    for a in result.false_positives:
        example.setdefault((a["rule"], json.dumps(a["group"], sort_keys=True)), a)
    rows = []
    for (rule, group), n in groups.most_common(top):
        a = example[(rule, group)]
        rows.append(f"  {n:>4} x {rule} {group}  first {a['first_ts']}: {a['summary'][:110]}")
    if len(groups) > top:
        rest = sum(n for _, n in groups.most_common()[top:])
        rows.append(f"  ... {rest} more in {len(groups) - top} other groups")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="days to simulate from a Monday (default 7)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one simulation each")
    parser.add_argument("--rules", type=Path, default=SHIPPED_RULES, help="rules.yaml to judge")
    parser.add_argument("--top", type=int, default=20, help="noisiest false-positive groups to list")
    parser.add_argument("--keep", type=Path, help="write each seed's files under this directory")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead")
    args = parser.parse_args(argv)
    results, infos = [], []
    with tempfile.TemporaryDirectory(prefix="xinf-watch-quality-") as tmp:
        for seed in args.seeds:
            directory = (args.keep or Path(tmp)) / f"seed-{seed}"
            result, info = run_seed(seed, args.days, args.rules.resolve(), directory)
            results.append(result)
            infos.append(info)
            if not args.json:
                print(
                    f"seed {seed}: {info['lines']:,} lines over {args.days} days "
                    f"(generated in {info['generate_s']} s, replayed in {info['replay_s']} s)"
                )
                print("\n".join(table(result)) + "\n")
    total = merge(results)
    if args.json:
        out = {
            "rules": str(args.rules),
            "days": args.days,
            "seeds": [{**info, **r.to_json()} for info, r in zip(infos, results, strict=True)],
            "total": total.to_json(),
        }
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 0
    if len(results) > 1:
        print(f"all seeds ({', '.join(map(str, args.seeds))}): {total.days:.0f} simulated days")
        print("\n".join(table(total)) + "\n")
    print(
        f"false positives: {total.false_positive_count} ({total.false_positive_count / total.days:.2f} a day)"
    )
    print("\n".join(noisiest(total, args.top)))
    print(f"\nmissed incidents: {len(total.missed)} of {total.incidents}")
    for m in total.missed:
        print(
            f"  {m['id']} {m['start']} .. {m['end']} keys={m['keys']} ips={m['ips']} "
            f"rules={m['rules']}: {m['what']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
