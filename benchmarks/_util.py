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
