"""The lab tables in a pipe: one line per row, the release hash and the reason whole."""

from warpforge_launch.lab import report
from warpforge_launch.lab.pushresult import BoxResult
from warpforge_launch.lab.smoke import BoxOutcome, SmokeReport
from warpforge_launch.lab.wake import WakeResult

REL, WAS = "0123456789abcdef0123", "fedcba9876543210fedc.a1b2c3"
REASON = ("trace-example: model.mlir has 12 bytes, expected at least 100 containing stablehlo "
          "and func.func; the program said: no such backend 'rocm' on this box")


def row(out: str, first: str) -> str:
    [line] = [ln for ln in out.splitlines() if ln.startswith(first + " ")]
    return line


def test_distribute_rows_are_single_lines_in_a_pipe(capsys):
    rows = [BoxResult(f"box-with-a-long-name-{i}", action="repaired", release=REL, previous=WAS,
                      files_sent=3, bytes_sent=3_840_000, files_linked=2971, seconds=12.5)
            for i in range(2)]
    report.distribute_table(rows)
    out = capsys.readouterr().out
    line = row(out, "box-with-a-long-name-1")
    assert REL in line and WAS in line and line.rstrip().endswith("12.50s")
    assert len(out.splitlines()) == 4  # header, two rows, the summary


def test_smoke_and_wake_rows_are_single_lines_in_a_pipe(capsys):
    report.smoke_table(SmokeReport([BoxOutcome("amd", "FAILED", REASON, release=REL,
                                               seconds=3.0)]))
    line = row(capsys.readouterr().out, "amd")
    assert REL in line and line.rstrip().endswith(REASON)
    note = "unreachable after 60s (no SSH banner within 10s: the port accepts connections)"
    report.wake_table([WakeResult("intel", sent=True, note=note)])
    assert row(capsys.readouterr().out, "intel").rstrip().endswith(note)
