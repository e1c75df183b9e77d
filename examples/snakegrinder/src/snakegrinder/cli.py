"""Command line of the stand-in snakegrinder (same options and exit codes as the real one).

Exit codes: 0 success, 1 the trace failed (``FAILED: <why>`` on stderr), 2 bad arguments.
Argument handling imports no torch, so ``--help``, ``--version`` and usage errors are fast.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from snakegrinder import VERSION
from snakegrinder.inputs import InputSpecError, parse, render

MODES = ("--trace", "--trace-with-values", "--trace-example", "--version", "--help")
VALUED = ("--source", "--class", "--inputs", "--seed", "--out")
DEFAULT_OUT = {
    "--trace": "build/snakegrinder/trace",
    "--trace-with-values": "build/snakegrinder/trace-with-values",
    "--trace-example": "build/snakegrinder/trace-example",
}
DEFAULT_SEED = 42

HELP = """\
snakegrinder - PyTorch to StableHLO converter (STAND-IN for WarpForge's native binary)

Usage:
  snakegrinder --trace --source <file> --class <name> --inputs <specs> [--seed <n>] [--out <dir>]
  snakegrinder --trace-with-values --source <file> --class <name> --inputs <specs>
               [--seed <n>] [--out <dir>]
  snakegrinder --trace-example [--out <dir>]
  snakegrinder --version
  snakegrinder --help

Commands:
  --trace              Trace a PyTorch nn.Module and convert it to StableHLO MLIR
  --trace-with-values  Trace and also write inputs, weights and outputs as .npy
  --trace-example      Trace the built-in example (SimpleMLP)
  --version            Print the stand-in's version (the real binary has no --version)

Trace options:
  --source <file>  Python source file containing the nn.Module class
  --class <name>   nn.Module class name to trace (constructed with no arguments)
  --inputs <specs> Input shapes, e.g. '[(1,8)]' or "[(1, 128, 'i64'), (4,)]" (default dtype f32)
  --out <dir>      Output directory (default: build/snakegrinder/<command>)
  --seed <n>       Random seed for weights and inputs (default: 42)

Exit codes: 0 success, 1 trace failed, 2 bad arguments.
"""


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[str, dict[str, str]]:
    mode: str | None = None
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            name = "--help"
        if name in MODES and not eq:
            if mode is not None and mode != name:
                raise UsageError(f"{mode} and {name} cannot be combined")
            mode = name
        elif name in VALUED:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise UsageError(f"{name} needs a value")
            opts[name] = value
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        else:
            raise UsageError(f"unexpected argument {arg!r}")
        i += 1
    if mode is None:
        raise UsageError("Unknown or missing arguments.")
    return mode, opts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        mode, opts = parse_args(argv)
        if mode == "--help":
            sys.stdout.write(HELP)
            return 0
        if mode == "--version":
            print(version_line())
            return 0
        seed = _seed(opts)
        out = Path(opts.get("--out", DEFAULT_OUT[mode]))
        if mode == "--trace-example":
            return run_example(out, seed)
        missing = [o for o in ("--source", "--class", "--inputs") if not opts.get(o)]
        if missing:
            raise UsageError(f"{mode} requires --source, --class and --inputs "
                             f"(missing {', '.join(missing)})")
        specs = parse(opts["--inputs"])
    except (UsageError, InputSpecError) as exc:
        print(f"snakegrinder: error: {exc}", file=sys.stderr)
        print("Use --help for usage information", file=sys.stderr)
        return 2
    return run_trace(mode, Path(opts["--source"]), opts["--class"], specs, seed, out)


def _seed(opts: dict[str, str]) -> int:
    text = opts.get("--seed", str(DEFAULT_SEED))
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--seed {text!r} is not an integer") from None


def version_line() -> str:
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "missing"
    return (f"snakegrinder {VERSION} (stand-in; torch {torch_version}, "
            f"python {platform.python_version()})")


def run_example(out: Path, seed: int) -> int:
    print("SnakeGrinder Trace Example (stand-in)")
    print(f"Output: {out.resolve()}")
    print()
    started = time.monotonic()
    from snakegrinder import bundle

    meta = {"example": "SimpleMLP", "tracer": bundle.TRACER, "seed": seed}
    try:
        from snakegrinder.example import INPUTS, SimpleMLP
        from snakegrinder.trace import TraceFailed, trace

        try:
            traced = trace(SimpleMLP, INPUTS, seed)
        except TraceFailed as exc:
            return _failed(out, str(exc), meta, with_values=False)
        meta["elapsed_seconds"] = round(time.monotonic() - started, 3)
        bundle.write_ok(out, traced, meta, with_values=False, seed=None)
    except OSError as exc:
        return _failed(out, f"cannot write output: {exc}", meta, with_values=False)
    print("SUCCESS: Trace example completed")
    print()
    print("Output files:")
    print(f"  MLIR:     {out / 'model.mlir'}")
    print(f"  Manifest: {out / 'manifest.json'}")
    print()
    print("StableHLO MLIR:")
    print("----------------------------------------")
    print(traced.mlir.rstrip("\n"))
    print("----------------------------------------")
    return 0


def run_trace(mode: str, source: Path, class_name: str, specs, seed: int, out: Path) -> int:
    with_values = mode == "--trace-with-values"
    title = "Trace With Values" if with_values else "Trace"
    print(f"SnakeGrinder {title} (stand-in)")
    print(f"Source: {source}")
    print(f"Class:  {class_name}")
    print(f"Inputs: {render(specs)}")
    print(f"Seed:   {seed}")
    print(f"Output: {out.resolve()}")
    print()
    sys.stdout.flush()
    started = time.monotonic()
    from snakegrinder import bundle

    meta = {"class": class_name, "source": str(source), "tracer": bundle.TRACER,
            "inputs": render(specs), "input_count": len(specs), "seed": seed}
    try:
        from snakegrinder.trace import TraceFailed, load_class, trace

        try:
            traced = trace(load_class(source, class_name), specs, seed)
        except TraceFailed as exc:
            return _failed(out, str(exc), meta, with_values=with_values)
        meta.update(weight_count=len(traced.weights), output_count=len(traced.outputs),
                    elapsed_seconds=round(time.monotonic() - started, 3))
        bundle.write_ok(out, traced, meta, with_values=with_values, seed=seed)
    except OSError as exc:
        return _failed(out, f"cannot write output: {exc}", meta, with_values=with_values)
    print("SUCCESS: Trace with values completed" if with_values else "SUCCESS: Trace completed")
    print()
    print("Output files:")
    print(f"  MLIR:     {out / 'model.mlir'}")
    print(f"  Manifest: {out / 'manifest.json'}")
    if with_values:
        for label, key, items in (("Inputs:  ", "inputs", traced.inputs),
                                  ("Outputs: ", "outputs", traced.outputs)):
            print(f"  {label} {out / key}/")
            for i in range(len(items)):
                print(f"            - {key[:-1]}_{i}.npy")
    return 0


def _failed(out: Path, error: str, meta: dict, *, with_values: bool) -> int:
    from snakegrinder import bundle

    bundle.write_failed(out, error, meta, with_values=with_values)
    sys.stdout.flush()
    print(f"FAILED: {error}", file=sys.stderr)
    return 1
