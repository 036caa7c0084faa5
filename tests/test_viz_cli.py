"""`minicnn visualize` and `minicnn layers` on small fake runs: PNGs of the expected size, one-line errors."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread, imsave

import minicnn as mc
from minicnn import optim
from minicnn.cli import main
from minicnn.models import get_spec
from minicnn.train.checkpoint import save_checkpoint
from minicnn.train.config import TrainConfig

CLASSES = [f"class{i}" for i in range(10)]
TEST_IMAGES = 40


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny CIFAR-10 in the official layout (random pixels, 40 test images)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n):
        return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"labels": [int(v) for v in rng.integers(0, 10, n)]}, protocol=4)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(batch(2))
    (folder / "test_batch").write_bytes(batch(TEST_IMAGES))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=4))
    return root


def write_run(folder, arch, data_root, val_accs=(0.3,), weights_arch=None, every_epoch=False):
    """A run folder as `minicnn train` leaves it: best/last (+ epoch-NNN) checkpoints of random weights."""
    config = TrainConfig.from_spec(get_spec(arch), data=str(data_root), device="cpu")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    history, best = [], None
    for epoch, accuracy in enumerate(val_accs, start=1):
        mc.manual_seed(epoch)
        model = get_spec(weights_arch or arch).build(10)
        history.append({"epoch": epoch, "val_acc": accuracy})
        meta = {"epoch": epoch, "config": config.to_dict(), "history": list(history), "classes": CLASSES,
                "normalizer": {"mean": [0.0] * 3, "std": [255.0] * 3}, "val_is_test": True}
        names = ["last"] + (["best"] if best is None or accuracy > best else []) \
            + ([f"epoch-{epoch:03d}"] if every_epoch else [])
        best = max(best or 0, accuracy)
        for name in names:
            save_checkpoint(folder / name, model, optim.Adam(model.parameters()), {**meta, "best": {"val_acc": best}})
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    top = tmp_path_factory.mktemp("runs")
    return {"cnn4": write_run(top / "cnn4-1", "cnn4", data_root, val_accs=(0.2, 0.1, 0.3), every_epoch=True),
            "resnet20": write_run(top / "resnet20-1", "resnet20", data_root),
            "mismatch": write_run(top / "cnn4-2", "cnn4", data_root, weights_arch="cnn6")}


def cli(monkeypatch, capsys, *args):
    """Run `minicnn ARGS` in this process as the console script does: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["minicnn", *args])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def pngs(stdout):
    return [line for line in stdout.splitlines() if line.endswith(".png")]


def pixels(path):
    """(width, height) of a PNG, read back with matplotlib."""
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.std() > 0
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("args,size", [
    (("--layer", "conv1", "--image", "3"), (800, 660)),              # 32 maps: 6x6 grid + 2 cells of input
    (("--what", "filters", "--layer", "conv1"), (640, 660)),         # 32 RGB patches, 6x6
    (("--what", "filters", "--layer", "conv2"), (840, 860)),         # 16 filters x 16 of 32 channels
    (("--what", "gradcam", "--images", "0-3", "--topk", "2"), (1290, 500)),  # 2x2 groups of image + 2 maps, bar
    (("--what", "gradcam", "--layer", "relu2", "--class", "class3", "--image", "5"), (490, 300)),
    (("--what", "layers", "--image", "0"), (1000, 1280)),            # input + 11 layers, 8 maps each, class names
])
def test_figures_have_the_expected_size(monkeypatch, capsys, runs, tmp_path, args, size):
    code, out, err = cli(monkeypatch, capsys, "visualize", "--run", str(runs["cnn4"]), "--device", "cpu",
                         "--out", str(tmp_path), *args)
    assert code == 0, err
    [path] = pngs(out)
    assert path.startswith(str(tmp_path)) and pixels(path) == size


def test_cam_on_a_gap_network_for_an_image_file(monkeypatch, capsys, runs, tmp_path):
    picture = tmp_path / "my_cat.png"
    imsave(picture, np.random.default_rng(0).random((50, 40, 3)))
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "cam", "--image", str(picture), "--topk", "3",
                         "--run", str(runs["resnet20"]), "--device", "cpu")
    assert code == 0, err
    [path] = pngs(out)
    assert path == str(runs["resnet20"] / "figures" / "cam-my_cat-top3.png")  # default: <run>/figures
    assert pixels(path) == (890, 300)  # image + 3 maps, colour bar


def test_tsne_with_a_mixture_writes_its_scores(monkeypatch, capsys, runs, tmp_path):
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "tsne", "--layer", "flatten1", "--samples", "30",
                         "--gmm", "3", "--run", str(runs["cnn4"]), "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, err
    assert pixels(pngs(out)[0]) == (1200, 660)
    scores = json.loads((tmp_path / "tsne-flatten1-gmm3.json").read_text())
    assert scores["samples"] == 30 and -1 <= scores["adjusted_rand_index"] <= 1
    assert f"adjusted Rand index {scores['adjusted_rand_index']:.4f}" in out


def test_tsne_progress_shows_the_improvements(monkeypatch, capsys, runs, tmp_path):
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "tsne-progress", "--samples", "20",
                         "--run", str(runs["cnn4"]), "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, err
    assert "the 2 epochs where validation accuracy improved" in out  # epochs 1 and 3 of 0.2, 0.1, 0.3
    assert pixels(pngs(out)[0]) == (800, 460)


def test_the_latest_run_is_the_default_and_layers_lists_names(monkeypatch, capsys, runs, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(monkeypatch, capsys, "layers", "--device", "cpu")
    assert code == 1 and "minicnn train --arch vgg8_bn" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "runs").mkdir()
    for name, age in (("cnn4", 100), ("resnet20", 0)):
        os.symlink(runs[name], tmp_path / "runs" / name)
        for checkpoint in runs[name].glob("*.npz"):
            os.utime(checkpoint, (1e9 + age, 1e9 + age))
    code, out, err = cli(monkeypatch, capsys, "layers", "--device", "cpu")
    assert code == 0, err
    assert "cnn4 best (epoch 3)" in out and "fc1       Linear           (10,)" in out


@pytest.mark.parametrize("args,message", [
    (("--layer", "conv9"), "unknown layer 'conv9'; this network's layers are: conv1, relu1, pool1"),
    (("--image", "40"), "image index 40 is out of range: the cifar10 test set has 40 images (0-39)"),
    (("--what", "cam"), "CAM needs a network ending in global average pooling"),
    (("--what", "gradcam", "--layer", "fc1"), "Grad-CAM needs a layer with spatial maps"),
    (("--what", "filters", "--layer", "pool1"), "pool1 is a MaxPool2d, not a conv layer"),
    (("--what", "maps", "--layer", "fc1"), "fc1 outputs vectors"),
    (("--what", "gradcam", "--class", "cat"), "unknown class 'cat'"),
    (("--what", "nope",), "--what must be one of maps, filters"),
    (("--checkpoint", "epoch-009",), "has no epoch-009.npz (it has: best, epoch-001, epoch-002, epoch-003, last)"),
    (("--images", "3-x",), "--image 3-x: give an image file, or a test-set index (7), range (0-15)"),
    (("--image", "missing.png",), "--image missing.png: no such image file; give an image file, or"),
])
def test_bad_arguments_are_one_line_errors(monkeypatch, capsys, runs, args, message):
    code, _, err = cli(monkeypatch, capsys, "visualize", "--run", str(runs["cnn4"]), "--device", "cpu", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_unreadable_images_and_other_architectures_are_one_line_errors(monkeypatch, capsys, runs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    code, _, err = cli(monkeypatch, capsys, "visualize", "--image", str(broken), "--run", str(runs["cnn4"]),
                       "--device", "cpu")
    assert code == 1 and "cannot read this image" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(monkeypatch, capsys, "layers", "--run", str(runs["mismatch"]), "--device", "cpu")
    assert code == 1 and "a 'cnn4' checkpoint) does not fit this model" in err and len(err.strip().splitlines()) == 1


def test_show_without_a_display_says_so(monkeypatch, capsys, runs, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    code, out, err = cli(monkeypatch, capsys, "visualize", "--run", str(runs["cnn4"]), "--device", "cpu",
                         "--out", str(tmp_path), "--show")
    assert code == 0, err
    assert "--show: no window can open here" in out and len(pngs(out)) == 1


def test_the_console_script_prints_no_traceback(runs):
    result = subprocess.run([sys.executable, "-m", "minicnn.cli", "visualize", "--run", str(runs["cnn4"]),
                             "--layer", "nope", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "unknown layer 'nope'" in result.stderr
