"""The command line, run as a user runs it: exit codes and one-line errors."""
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "minicnn.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_gradcheck_prints_a_passing_table_for_one_op():
    result = run("gradcheck", "--op", "max_pool2d", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("max_pool2d")]
    assert len(rows) == 5 and all(" ok " in row for row in rows)
    assert "5 passed, 0 failed" in result.stdout


def test_gradcheck_of_everything_passes_on_the_cpu():
    result = run("gradcheck", "--device", "cpu")
    assert result.returncode == 0, result.stdout[-2000:]
    assert " 0 failed" in result.stdout


@pytest.mark.parametrize("args,message", [
    (("gradcheck", "--op", "nope"), "no op named 'nope'"),
    (("gradcheck", "--dtype", "float16"), "--dtype must be float64 or float32"),
    (("gradcheck", "--device", "tpu"), "unknown device 'tpu'"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_info_says_what_auto_picks():
    result = run("info")
    assert result.returncode == 0
    assert "--device auto picks:" in result.stdout
