"""`minicnn data download|info` through the Typer sub-app (the lead mounts it as `minicnn data`)."""
import hashlib
import tarfile

from typer.testing import CliRunner

from data_fixtures import serve, write_cifar100
from minicnn.data.cli import data_app

runner = CliRunner()


def cifar100_archive(tmp_path) -> bytes:
    write_cifar100(tmp_path / "src", n_train=10, n_test=5)
    path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    return path.read_bytes()


def test_download_then_info(tmp_path):
    payload = cifar100_archive(tmp_path)
    root = tmp_path / "data"
    with serve(payload) as server:
        result = runner.invoke(data_app, ["download", "cifar100", "--root", str(root), "--url", server.url,
                                          "--md5", hashlib.md5(payload).hexdigest(), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"CIFAR-100 ready in {root / 'cifar-100-python'}" in result.output
    result = runner.invoke(data_app, ["info", "cifar100", "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert "train 10 images, test 5, 100 classes" in result.output and "fine0, fine1" in result.output


def test_download_error_is_one_line_and_exit_1(tmp_path):
    payload = cifar100_archive(tmp_path)
    with serve(payload) as server:
        result = runner.invoke(data_app, ["download", "cifar100", "--root", str(tmp_path / "data"),
                                          "--url", server.url, "--md5", "f" * 32, "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.startswith("minicnn: error: ") and "does not match" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_info_without_data_says_how_to_get_it(tmp_path):
    result = runner.invoke(data_app, ["info", "cifar10", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "minicnn data download cifar10" in result.stderr and "--data DIR" in result.stderr


def test_unknown_dataset(tmp_path):
    result = runner.invoke(data_app, ["download", "imagenet", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "unknown dataset 'imagenet'" in result.stderr
