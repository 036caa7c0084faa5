"""`minicnn train | evaluate | predict | reproduce` end to end, on small synthetic CIFAR-10 files.

Interruption is tested for real: a training process killed with SIGKILL, another stopped with
SIGINT (Ctrl-C), each then resumed from its folder.
"""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minicnn import functional as F
from minicnn.autograd import no_grad, tensor
from minicnn.models import get_spec
from minicnn.train import TrainConfig, load_checkpoint, train
from sigint import start_interruptible
from test_train_fixtures import CLASSES, colour_images, one_line_error, write_colour_cifar10

MINICNN = [sys.executable, "-c", "from minicnn.cli import main; main()"]
QUICK = ["--device", "cpu", "--limit", "48", "--batch", "16", "--no-progress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_colour_cifar10(tmp_path_factory.mktemp("colour-cifar10"))


def minicnn(*args, cwd):
    return subprocess.run(MINICNN + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)


def run_folder(out):
    folders = list(out.glob("*/"))
    return folders[0] if len(folders) == 1 else None


def wait_for_epoch(out, epoch, process, timeout=120):
    """The run folder under `out`, once its last checkpoint holds `epoch` (read as resume reads it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        folder = run_folder(out)
        if folder and (folder / "last.npz").is_file() and load_checkpoint(folder / "last.npz").meta["epoch"] >= epoch:
            return folder
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout}s")


def test_sigkill_loses_at_most_the_epoch_in_progress_and_resume_continues_exactly(tmp_path, data_dir):
    out = tmp_path / "runs"
    process = subprocess.Popen(MINICNN + ["train", "--arch", "cnn4", "--data", str(data_dir), "--out", str(out),
                                          "--epochs", "50", *QUICK], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = wait_for_epoch(out, 2, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done = load_checkpoint(folder / "last.npz").meta["epoch"]  # the .npz is the truth; last.json may lag by one
    assert done >= 2

    resumed = minicnn("train", "--resume", folder, "--epochs", done + 1, "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {folder} after epoch {done}" in resumed.stdout
    assert not list(folder.glob(".*"))  # no temporary file of the killed run is left
    assert [line.split(",")[0] for line in (folder / "metrics.csv").read_text().splitlines()[1:]] == \
        [str(e) for e in range(1, done + 2)]

    config = TrainConfig.from_spec(get_spec("cnn4"), epochs=done + 1, batch_size=16, limit=48, device="cpu",
                                   data=str(data_dir))
    reference = train(config, run_dir=tmp_path / "reference", progress=False, log=lambda message: None)
    expected = load_checkpoint(reference.run_dir / "last.npz").model
    got = load_checkpoint(folder / "last.npz").model
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, data_dir):
    out = tmp_path / "runs"
    process = start_interruptible(MINICNN + ["train", "--arch", "A2", "--data", str(data_dir), "--out", str(out),
                                             "--epochs", "50", *QUICK],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = wait_for_epoch(out, 1, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    done = load_checkpoint(folder / "last.npz").meta["epoch"]
    assert f"holds epoch {done} of 50; continue with `minicnn train --resume {folder}`" in stdout

    resumed = minicnn("train", "--resume", folder, "--epochs", done + 1, "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "| report A2: 72.87% (loss 1.140)" in resumed.stdout
    assert "validates on the test set" in resumed.stdout and "--limit" in resumed.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished 2-epoch cnn4 run folder."""
    out = tmp_path_factory.mktemp("trained")
    done = minicnn("train", "--arch", "cnn4", "--data", data_dir, "--out", out, "--epochs", 2, "--lr", 0.01, *QUICK,
                   cwd=out)
    assert done.returncode == 0, done.stderr
    return run_folder(out)


def test_train_writes_the_run_and_prints_test_beside_the_report(trained):
    result = json.loads((trained / "result.json").read_text())
    assert result["reported"] == "72.87% (loss 1.140)" and result["tested"] == "best"
    config = json.loads((trained / "config.json").read_text())
    assert config["arch"] == "cnn4" and config["recipe"]["batch_size"] == 16 and config["recipe"]["lr"] == 0.01
    assert config["recipe"]["epochs"] == 2 and config["recipe"]["normalization"] == "scale"  # the rest is the recipe


def test_evaluate_prints_accuracy_per_class_and_writes_a_confusion_matrix(trained, data_dir, tmp_path):
    done = minicnn("evaluate", trained, "--data", data_dir, "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    accuracy = json.loads((trained / "result.json").read_text())["test_accuracy"]
    assert f"test accuracy {accuracy:.2%}" in lines[0] and "on 40 images" in lines[0] and "best.npz" in lines[0]
    per_class = [line.split() for line in lines[1:11]]
    assert [row[0] for row in per_class] == CLASSES and all(row[2] == "(4" for row in per_class)
    # the mean of the per-class accuracies is the accuracy (4 test images per class)
    assert np.mean([float(row[1].rstrip("%")) for row in per_class]) == pytest.approx(100 * accuracy, abs=0.01)
    png = trained / "confusion-best.png"
    assert lines[-1] == f"confusion matrix: {png}" and png.read_bytes()[:4] == b"\x89PNG"


def test_predict_lists_the_top_three_classes(trained, tmp_path):
    pixels = colour_images(np.array([3]), np.random.default_rng(5))[0].transpose(1, 2, 0)
    Image.fromarray(pixels).resize((64, 48)).save(tmp_path / "three.png")
    done = minicnn("predict", trained / "best.npz", tmp_path / "three.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == ["1.", "2.", "3."]
    # the same answer computed here: resize back to 32x32, scale by 1/255, run the checkpoint's network
    image = np.asarray(Image.open(tmp_path / "three.png").convert("RGB").resize((32, 32), Image.BILINEAR))
    model = get_spec("cnn4").build(10)
    model.load_state_dict(load_checkpoint(trained / "best.npz").model)
    with no_grad():
        p = F.softmax(model.eval()(tensor(image.transpose(2, 0, 1)[None] / np.float32(255)))).numpy()[0]
    top = np.argsort(-p)[:3]
    assert [row[1] for row in rows] == [CLASSES[i] for i in top]
    assert [float(row[2].rstrip("%")) for row in rows] == pytest.approx(100 * p[top], abs=0.006)

    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = minicnn("predict", trained / "best.npz", tmp_path / "bad.png", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"minicnn: error: {tmp_path / 'bad.png'}: cannot read this image")


def test_reproduce_writes_a_table_that_says_epochs_were_cut(tmp_path, data_dir):
    done = minicnn("reproduce", "--arch", "cnn4,A1", "--epochs", 1, "--limit", 32, "--data", data_dir,
                   "--out", tmp_path, "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = next(tmp_path.glob("reproduce-*/reproduce.md"))
    text = table.read_text()
    assert "Epochs set to 1 for a quick look" in text and "first 32 images" in text
    rows = [line for line in text.splitlines() if line.startswith("| cnn4")]
    assert len(rows) == 2
    assert "| cnn4 | A2 | 72.87% (loss 1.140) |" in rows[0] and "| 1 of 300 |" in rows[0]
    assert "| cnn4_raw | A1 | 63.00% (loss 2.198) |" in rows[1]
    measured = json.loads(next(tmp_path.glob("reproduce-*/cnn4-*/result.json")).read_text())["test_accuracy"]
    assert f"| {measured:.2%} (best, epoch 1) |" in rows[0]


@pytest.mark.parametrize("args, message", [
    (["train", "--arch", "nope"], "unknown architecture 'nope'; choose one of: cnn4_raw (A1), cnn4 (A2)"),
    (["train", "--arch", "cnn4", "--data", "{tmp}/empty"], "CIFAR-10 not found in {tmp}/empty"),
    (["train", "--resume", "{tmp}"], "--resume {tmp}: not a run folder (no last.npz)"),
    (["train", "--resume", "{tmp}", "--lr", "0.1"], "--resume continues a run with its own settings; --lr cannot"),
    (["train"], "--arch NAME is required"),
    (["train", "--arch", "cnn4", "--lr", "-1"], "--lr must be positive"),
    (["train", "--arch", "cnn4", "--precision", "fp16"], "--precision must be one of auto, fp32, tf32, bf16"),
    (["train", "--arch", "cnn4", "--device", "cpu", "--precision", "bf16"],
     "--precision bf16 changes only the CUDA kernels (--device cuda or emu)"),
    (["evaluate", "{tmp}"], "{tmp}: no checkpoint in this folder"),
    (["reproduce", "--report", "Z"], "no networks for report 'Z'; reports are: A, B, C, D, E"),
])
def test_user_errors_are_one_line(args, message, tmp_path, monkeypatch, capsys):
    err = one_line_error(args, tmp_path, monkeypatch, capsys)  # exit code 1, one 'minicnn: error:' line
    assert message.replace("{tmp}", str(tmp_path)) in err
    if "not found" in message:
        assert "minicnn data download cifar10" in err
