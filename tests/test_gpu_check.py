"""benchmarks/gpu_check.py's own plumbing, on the CPU: skips, the budget, the report, a dry run."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(gpu_check)


def test_missing_tools_are_one_line_skip_reasons():
    assert gpu_check.missing(("exe:no-such-tool-here",), dry=False) == "no-such-tool-here not found on PATH"
    assert gpu_check.missing(("py:no_such_module_here",), dry=True) == "Python module no_such_module_here not installed"
    assert gpu_check.missing(("exe:no-such-tool-here",), dry=True) is None  # the dry variant needs no tool


def test_a_check_past_the_budget_is_skipped_and_a_failing_one_reports_its_exit_code():
    echo = gpu_check.Check("echo", [sys.executable, "-c", "print('x')"], [sys.executable, "-c", "print('x')"], 60)
    assert gpu_check.run_check(echo, dry=True, seconds_left=5).status == "skipped: the time budget is spent"
    failing = gpu_check.Check("fails", [], [sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"], 60)
    result = gpu_check.run_check(failing, dry=True, seconds_left=60)
    assert result.status == "failed (exit 3)" and result.summary == ["bad"]


def test_dry_run_writes_a_markdown_table_row_per_check(tmp_path, capsys):
    out = tmp_path / "report.md"
    assert gpu_check.main(["--dry-run", "--only", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# minicnn GPU check") and "--dry-run" in text
    rows = [line for line in text.splitlines() if line.startswith("| minicnn gradcheck")]
    assert len(rows) == 1 and "| ok |" in rows[0] and "passed, 0 failed" in rows[0]
    assert "[2/7] minicnn gradcheck --device cuda: ok" in capsys.readouterr().out
