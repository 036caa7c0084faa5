"""The restricted unpickler: reads what the official CIFAR files contain, runs nothing else."""
import pickle

import numpy as np
import pytest

from data_fixtures import py2_pickle
from minicnn.data import DataError, safe_loads


def test_reads_python2_numpy_pickle():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    obj = safe_loads(py2_pickle([(b"data", data), (b"labels", [3, 7]), (b"names", [b"cat"])]), "batch")
    assert obj[b"labels"] == [3, 7] and obj[b"names"] == [b"cat"]
    assert obj[b"data"].dtype == np.uint8 and np.array_equal(obj[b"data"], data)


def test_reads_python3_numpy_pickle():
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    obj = safe_loads(pickle.dumps({b"data": data}, protocol=4), "batch")
    assert np.array_equal(obj[b"data"], data)


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: os.system('touch ...')
    with pytest.raises(DataError, match=r"data_batch_1: refused to load global 'os\.system'"):
        safe_loads(evil, "data_batch_1")
    assert not marker.exists()


def test_refuses_any_other_global():
    # Python 3 protocol-2 pickles spell bytes as _codecs.encode(...): not in an official file.
    with pytest.raises(DataError, match="_codecs.encode"):
        safe_loads(pickle.dumps(b"abc", protocol=2), "f")
    # protocol 5 rebuilds arrays through numpy._core.numeric._frombuffer: also refused
    with pytest.raises(DataError, match="_frombuffer"):
        safe_loads(pickle.dumps(np.zeros(3, np.uint8), protocol=5), "f")


def test_truncated_pickle_is_one_line_error():
    raw = py2_pickle([(b"data", np.zeros((4, 3072), np.uint8))])
    with pytest.raises(DataError, match="^test_batch: not a readable CIFAR pickle") as info:
        safe_loads(raw[: len(raw) // 2], "test_batch")
    assert "\n" not in str(info.value)
