"""Stand-in snakegrinder: a Python re-implementation of WarpForge's snakegrinder contract.

WarpForge's real snakegrinder is a GraalVM native binary built with Gradle. This stand-in
exists so the warpforge-launch pipeline (build, distribute, smoke test, jobs) runs for real
on machines without that build: it keeps the real one's options, input dialect, bundle
layout, manifest keys, output lines and exit codes, and really traces with torch.fx.
"""

VERSION = "0.1.0-standin"
