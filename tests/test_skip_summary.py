"""The end-of-run summary of skipped tests (issue 14, item 9), checked on a small fake suite."""
import shutil
import subprocess
import sys
from pathlib import Path

FAKE_SUITE = '''
import pytest

DATA = "/x/shared/data/cifar10/prepare.py not found (shared/ must sit beside the repository)"

@pytest.mark.parametrize("n", range(3))
def test_needs_data(n):
    pytest.skip(DATA)

@pytest.mark.skipif(True, reason="no usable GPU: CuPy is not installed")
def test_needs_a_gpu():
    pass

def test_needs_nvcc():
    pytest.skip("nvcc is not installed")

def test_runs():
    assert True
'''


def test_skips_are_summarized_once_per_group_at_the_end(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_fake.py").write_text(FAKE_SUITE)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout
    tail = result.stdout[result.stdout.index("skipped tests"):].splitlines()[1:]
    assert tail[0].startswith("3 skipped: the CIFAR-10 test data is missing: put the project's shared/ folder")
    assert tail[1] == "1 skipped: no usable GPU: they run where CuPy ('.[cuda]') sees a CUDA GPU"
    assert tail[2] == "1 skipped for other reasons (nvcc is not installed)"
    assert "pytest -rs" in tail[3]
    assert result.stdout.count("skipped tests") == 1
