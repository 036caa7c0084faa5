"""Loading CIFAR-10 (the rebuilt official files) and CIFAR-100 (small synthetic files in the official format)."""
import io
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from data_fixtures import PREPARE, cifar10_batch, cifar10_root, py2_pickle, write_cifar100  # noqa: F401
from minicnn.data import DataError, data_root, load_cifar

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar10(cifar10_root):
    return load_cifar("cifar10", cifar10_root)


def test_cifar10_shapes_dtypes_and_counts(cifar10, cifar10_root):
    assert cifar10.source == cifar10_root / "cifar-10-batches-py"
    assert cifar10.train_x.shape == (50_000, 3, 32, 32) and cifar10.train_x.dtype == np.uint8
    assert cifar10.test_x.shape == (10_000, 3, 32, 32) and cifar10.test_x.dtype == np.uint8
    assert cifar10.train_y.dtype == np.int64 and cifar10.test_y.dtype == np.int64
    assert np.array_equal(np.bincount(cifar10.train_y), [5000] * 10)
    assert np.array_equal(np.bincount(cifar10.test_y), [1000] * 10)
    assert cifar10.classes == CLASSES and cifar10.train_coarse is None


def test_cifar10_pixels_are_nchw_rgb(cifar10):
    """Decode the first training JPEG independently: the loader must give the same RGB planes."""
    src = np.load(PREPARE.parent / "cifar10-jpeg.npz")
    jpeg = src["train_jpeg"].tobytes()[src["train_offsets"][0]:src["train_offsets"][1]]
    rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))     # (32, 32, 3)
    assert np.array_equal(cifar10.train_x[0], rgb.transpose(2, 0, 1))
    assert cifar10.train_y[0] == src["train_labels"][0]


def test_cifar10_from_tar_gz_matches_folder(cifar10, cifar10_root, tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").symlink_to(cifar10_root / "cifar-10-python.tar.gz")
    from_tar = load_cifar("cifar10", tmp_path)
    assert from_tar.source == tmp_path / "cifar-10-python.tar.gz"
    assert np.array_equal(from_tar.train_x, cifar10.train_x) and np.array_equal(from_tar.test_y, cifar10.test_y)


def test_root_may_be_the_extracted_folder(cifar10_root):
    data = load_cifar("cifar10", cifar10_root / "cifar-10-batches-py")
    assert len(data.test_y) == 10_000


def test_root_lookup_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "minicnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "minicnn"
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_env_variable_is_used(tmp_path, monkeypatch):
    write_cifar100(tmp_path)
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))
    assert load_cifar("cifar100").source == tmp_path / "cifar-100-python"


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", tmp_path)
    message = str(info.value)
    assert "minicnn data download cifar10" in message and "--data DIR" in message and "\n" not in message


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_cifar("mnist", tmp_path)


def small_cifar10(folder, cifar10_root, batch1: bytes):
    """A folder with the real batches.meta and the given data_batch_1 (the loader reads it first)."""
    folder.mkdir()
    shutil.copy(cifar10_root / "cifar-10-batches-py" / "batches.meta", folder)
    (folder / "data_batch_1").write_bytes(batch1)
    for name in ["data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).symlink_to(cifar10_root / "cifar-10-batches-py" / name)
    return folder


def test_malicious_pickle_is_refused_unexecuted(tmp_path, cifar10_root):
    marker = tmp_path / "pwned"
    folder = small_cifar10(tmp_path / "cifar-10-batches-py", cifar10_root,
                           f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(DataError, match=rf"{folder / 'data_batch_1'}: refused to load global 'os.system'"):
        load_cifar("cifar10", tmp_path)
    assert not marker.exists()


def test_truncated_file_names_the_file(tmp_path, cifar10_root):
    real = (cifar10_root / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    folder = small_cifar10(tmp_path / "cifar-10-batches-py", cifar10_root, real[:1_000_000])
    with pytest.raises(DataError, match=rf"^{folder / 'data_batch_1'}: not a readable CIFAR pickle"):
        load_cifar("cifar10", tmp_path)


def test_truncated_archive_is_one_line_error(tmp_path, cifar10_root):
    real = (cifar10_root / "cifar-10-python.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(real[:20_000_000])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: unreadable archive"):
        load_cifar("cifar10", tmp_path)


@pytest.mark.parametrize("bad_label", [10, -1])
def test_label_out_of_range_is_rejected(tmp_path, cifar10_root, bad_label):
    images = np.zeros((3, 3, 32, 32), np.uint8)
    small_cifar10(tmp_path / "cifar-10-batches-py", cifar10_root, cifar10_batch(images, [0, bad_label, 2]))
    with pytest.raises(DataError, match=r"data_batch_1: labels outside 0\.\.9"):
        load_cifar("cifar10", tmp_path)


def test_wrong_image_size_is_rejected(tmp_path, cifar10_root):
    batch = py2_pickle([(b"labels", [0, 1]), (b"data", np.zeros((2, 1024), np.uint8))])
    small_cifar10(tmp_path / "cifar-10-batches-py", cifar10_root, batch)
    with pytest.raises(DataError, match=r"data_batch_1: data must be a uint8 array of shape \(N, 3072\)"):
        load_cifar("cifar10", tmp_path)


def test_missing_labels_key_is_rejected(tmp_path, cifar10_root):
    batch = py2_pickle([(b"data", np.zeros((2, 3072), np.uint8))])
    small_cifar10(tmp_path / "cifar-10-batches-py", cifar10_root, batch)
    with pytest.raises(DataError, match=r"data_batch_1: expected a dict with keys \['data', 'labels'\]"):
        load_cifar("cifar10", tmp_path)


def test_cifar100_fine_and_coarse(tmp_path):
    arrays = write_cifar100(tmp_path)
    data = load_cifar("cifar100", tmp_path)
    x, fine, coarse = arrays["train"]
    assert data.train_x.shape == (60, 3, 32, 32) and np.array_equal(data.train_x, x)
    assert np.array_equal(data.train_y, fine) and np.array_equal(data.train_coarse, coarse)
    assert np.array_equal(data.test_y, arrays["test"][1]) and np.array_equal(data.test_coarse, arrays["test"][2])
    assert data.train_y.dtype == np.int64 and data.train_coarse.dtype == np.int64
    assert len(data.classes) == 100 and data.classes[7] == "fine7"
    assert len(data.coarse_classes) == 20 and data.coarse_classes[3] == "coarse3"


def test_cifar100_from_tar_gz(tmp_path):
    arrays = write_cifar100(tmp_path / "src")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    data = load_cifar("cifar100", tmp_path)
    assert data.source.name == "cifar-100-python.tar.gz"
    assert np.array_equal(data.test_x, arrays["test"][0])


def test_cifar100_fine_label_range(tmp_path):
    write_cifar100(tmp_path, n_train=3, fine_labels=[0, 100, 5])
    with pytest.raises(DataError, match=r"train: fine_labels outside 0\.\.99"):
        load_cifar("cifar100", tmp_path)
