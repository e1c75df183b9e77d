#!/usr/bin/env python3
"""The stand-in's own test suite (its ``./gradlew test``): checks a built dist, writes JUnit XML.

    python3 examples/snakegrinder/selftest.py [--dist DIR] [--junit-xml FILE]

Each check runs ``<dist>/bin/snakegrinder`` as a user would. The JUnit report lets
``invoke build`` enforce test-count floors exactly as it does for WarpForge's Gradle modules.
Standard library only. Exit codes: 0 all passed, 1 a check failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
GOLDEN = HERE / "tests" / "golden" / "simple_mlp.mlir"
TIMEOUT = 300


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


class Checks:
    def __init__(self, dist: Path, work: Path):
        self.bin = dist / "bin" / "snakegrinder"
        self.work = work

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin), *args], capture_output=True, text=True, check=False,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL, cwd=self.work)

    def test_version(self):
        r = self.run("--version")
        expect(r.returncode == 0 and "stand-in" in r.stdout, f"--version: {r.stdout!r}")

    def test_help(self):
        r = self.run("--help")
        expect(r.returncode == 0 and "--trace-with-values" in r.stdout, "--help lacks options")

    def test_unknown_option_exits_2(self):
        r = self.run("--no-such-option")
        expect(r.returncode == 2, f"exit {r.returncode}, wanted 2")

    def test_bad_inputs_exit_2(self):
        r = self.run("--trace", "--source", str(MODELS / "simple_mlp.py"), "--class",
                     "SimpleMLP", "--inputs", "[(1,8):f32]")
        expect(r.returncode == 2, f"exit {r.returncode}, wanted 2")

    def test_trace_example_matches_golden(self):
        out = self.work / "example"
        r = self.run("--trace-example", "--out", str(out))
        expect(r.returncode == 0 and "SUCCESS:" in r.stdout, f"exit {r.returncode}: {r.stderr}")
        expect((out / "model.mlir").read_text() == GOLDEN.read_text(), "MLIR differs from golden")

    def _bundle(self, source: str, cls: str, inputs: str, n_in: int, n_w: int):
        out = self.work / cls
        r = self.run("--trace-with-values", "--source", str(MODELS / source), "--class", cls,
                     "--inputs", inputs, "--seed", "42", "--out", str(out))
        expect(r.returncode == 0 and "SUCCESS:" in r.stdout, f"exit {r.returncode}: {r.stderr}")
        m = json.loads((out / "manifest.json").read_text())
        expect(m["kind"] == "snakegrinder-fx-trace-bundle" and m["status"] == "ok", str(m))
        art = m["artifacts"]
        expect(len(art["inputs"]) == n_in and len(art["weights"]) == n_w, str(art))
        for rel in [art["mlir"], art["fx_graph"], *art["inputs"], *art["weights"],
                    *art["outputs"]]:
            expect((out / rel).is_file(), f"missing {rel}")
        text = (out / "model.mlir").read_text()
        expect(text.startswith("module @main {") and "stablehlo.return" in text, "bad MLIR")

    def test_trace_with_values_simple_mlp(self):
        self._bundle("simple_mlp.py", "SimpleMLP", "[(1, 8)]", 1, 4)

    def test_trace_with_values_deep_mlp(self):
        self._bundle("deep_mlp.py", "DeepMLP", "[(2, 4, 8)]", 1, 16)

    def test_trace_with_values_gated_mixer(self):
        self._bundle("deep_mlp.py", "GatedMixer", "[(2, 8, 16), (2, 8, 16)]", 2, 5)

    def test_unsupported_op_fails(self):
        r = self.run("--trace", "--source", str(MODELS / "unsupported_op.py"), "--class",
                     "SoftmaxClassifier", "--inputs", "[(1, 8)]", "--out",
                     str(self.work / "unsupported"))
        expect(r.returncode == 1 and "FAILED: Softmax is not supported" in r.stderr,
               f"exit {r.returncode}: {r.stderr}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selftest.py", allow_abbrev=False)
    p.add_argument("--dist", default="snakegrinder-dist/build/dist")
    p.add_argument("--junit-xml",
                   default="snakegrinder-dist/build/test-results/test/TEST-standin.xml")
    args = p.parse_args(argv)
    dist = Path(args.dist).absolute()
    if not (dist / "bin" / "snakegrinder").exists():
        print(f"selftest: no dist at {dist} (build it first)", file=sys.stderr)
        return 2
    suite = ET.Element("testsuite", name="snakegrinder-standin")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="standin-selftest-") as tmp:
        checks = Checks(dist, Path(tmp))
        names = sorted(n for n in dir(checks) if n.startswith("test_"))
        for name in names:
            started = time.monotonic()
            case = ET.SubElement(suite, "testcase", classname="snakegrinder.standin", name=name)
            try:
                getattr(checks, name)()
                status = "ok"
            except (CheckFailed, OSError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
                failures += 1
                status = f"FAILED: {exc}"
                ET.SubElement(case, "failure", message=str(exc)[:500]).text = str(exc)
            case.set("time", f"{time.monotonic() - started:.3f}")
            print(f"{name} ... {status}", flush=True)
    suite.set("tests", str(len(names)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    report = Path(args.junit_xml)
    report.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(report, encoding="utf-8", xml_declaration=True)
    print(f"{len(names) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
