"""Shared measuring helpers: alternate A/B runs, several rounds, report medians and ratios."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def wall(argv: Sequence[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   timeout=120, **kw)
    return time.perf_counter() - t0


def alternate(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run every case once per round, in turn, and return each case's median seconds."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(fn())
    return {name: statistics.median(v) for name, v in samples.items()}


def report(title: str, medians: dict[str, float], baseline: str | None = None) -> None:
    print(f"== {title}")
    for name, m in medians.items():
        extra = ""
        if baseline and name != baseline:
            base = medians[baseline]
            extra = f"  ratio {m / base:.2f}  (+{(m - base) * 1000:.0f} ms)"
        print(f"  {name:<40} median {m * 1000:8.1f} ms{extra}")


TARGETS: list[tuple[str, str, str, bool]] = []  # (what, target, measured, met)


def target(what: str, goal: str, measured: str, met: bool) -> None:
    """Record one target for ``report_targets``."""
    TARGETS.append((what, goal, measured, met))


def report_targets() -> bool:
    """Print the table of targets vs measured; True when every target is met."""
    width = max(len(t[0]) for t in TARGETS)
    print(f"\n== targets\n  {'what':<{width}}  {'target':>10}  {'measured':>10}  result")
    for what, goal, measured, met in TARGETS:
        print(f"  {what:<{width}}  {goal:>10}  {measured:>10}  {'met' if met else 'MISSED'}")
    return all(t[3] for t in TARGETS)


def timed(fn, *a, **kw):
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def med(xs):
    return statistics.median(xs)
