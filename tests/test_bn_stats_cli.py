"""--bn-stats recompute in training, evaluate and visualize, and `minicnn visualize --what bn`."""
import csv
import json

import numpy as np
import pytest
from matplotlib.image import imread

from minicnn.data import prepare_data
from minicnn.train.bn_stats import recomputed_bn_stats
from minicnn.train import TrainConfig, load_checkpoint, train
from minicnn.train.bn_stats import statistics_batches
from minicnn.train.checkpoint import restore
from minicnn.train.evaluate import evaluate
from minicnn.data import BatchLoader
from test_train_fixtures import colour_cifar, tiny_spec
from test_viz_cli import cli, data_root, pngs, write_run  # noqa: F401  (data_root is a fixture)

QUIET = dict(progress=False, log=lambda message: None)


def test_training_validates_with_recomputed_statistics_and_learns_the_same(tmp_path):
    spec = tiny_spec(lr=0.01, epochs=2)
    results = {}
    for bn_stats in ("running", "recompute"):
        config = TrainConfig.from_spec(spec, device="cpu", bn_stats=bn_stats, bn_batches=3)
        results[bn_stats] = train(config, run_dir=tmp_path / bn_stats, spec=spec, data=colour_cifar(), **QUIET)
    folder = results["recompute"].run_dir
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert list(rows[0])[-2:] == ["val_loss_running", "val_acc_running"]
    # the weights and running averages do not depend on how validation measured them
    for name in ("last.npz",):
        with np.load(tmp_path / "running" / name) as a, np.load(folder / name) as b:
            for key in a.files:
                if key != "meta.json":
                    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the logged figures are the last checkpoint evaluated both ways
    last = load_checkpoint(folder / "last.npz")
    assert last.meta["bn_stats"] == "running"       # what the checkpoint's BN buffers hold
    config = TrainConfig.from_dict(last.meta["config"])
    model = spec.build(10)
    restore(last, model)
    splits = prepare_data(config.data_recipe(), data=colour_cifar())
    val = BatchLoader(splits.val_x, splits.val_y, 16, normalizer=splits.normalizer)
    assert float(rows[-1]["val_acc_running"]) == pytest.approx(evaluate(model, val).accuracy, abs=1e-6)
    batches = statistics_batches(splits, 16, seed=config.seed)
    batches.set_epoch(1)
    with recomputed_bn_stats(model, batches, 3):
        recomputed = evaluate(model, val)
    assert float(rows[-1]["val_loss"]) == pytest.approx(recomputed.loss, rel=1e-5)
    assert float(rows[-1]["val_loss"]) != pytest.approx(float(rows[-1]["val_loss_running"]), rel=1e-5)
    assert json.loads((folder / "result.json").read_text())["bn_stats"] == "recompute"


def test_evaluate_and_visualize_take_bn_stats(tmp_path, monkeypatch, capsys, data_root):  # noqa: F811
    run = write_run(tmp_path / "vgg8_bn-1", "vgg8_bn", data_root)
    code, out, err = cli(monkeypatch, capsys, "evaluate", str(run), "--device", "cpu", "--bn-stats", "recompute",
                         "--bn-batches", "2")
    assert code in (0, None), err
    assert "BN: statistics recomputed over 1 training batches of 32" in out  # 10 training images: one batch
    code, out, err = cli(monkeypatch, capsys, "evaluate", str(run), "--device", "cpu", "--bn-stats", "exact")
    assert code == 1 and err.strip().count("\n") == 0 and "--bn-stats must be one of running, recompute" in err
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "maps", "--run", str(run), "--device", "cpu",
                         "--bn-stats", "recompute", "--out", str(tmp_path / "figs"))
    assert code in (0, None), err
    assert len(pngs(out)) == 1


def test_visualize_bn_draws_running_against_batch_statistics(tmp_path, monkeypatch, capsys, data_root):  # noqa: F811
    run = write_run(tmp_path / "vgg8_bn-1", "vgg8_bn", data_root)
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "bn", "--run", str(run), "--device", "cpu",
                         "--out", str(tmp_path / "figs"))
    assert code in (0, None), err
    lines = out.splitlines()
    assert lines[0].startswith("accuracy on 40 test images: ")
    names = [f"bn{i}" for i in range(1, 11)]  # vgg8_bn's ten BN layers, each summarized
    assert [line.split(":")[0] for line in lines[1:11]] == names
    # an untrained network's running statistics (0 and 1) are far from any real batch's
    assert all("mean off by" in line and "variance running / batch" in line for line in lines[1:11])
    (png,) = pngs(out)
    height, width = imread(png).shape[:2]
    assert (width, height) == (1200, 1560)  # 2 layers a row of 12 inches, 5 rows of 3 inches + the title


def test_visualize_bn_needs_a_network_with_batch_norm(tmp_path, monkeypatch, capsys, data_root):  # noqa: F811
    run = write_run(tmp_path / "cnn4-1", "cnn4", data_root)
    code, out, err = cli(monkeypatch, capsys, "visualize", "--what", "bn", "--run", str(run), "--device", "cpu")
    assert code == 1 and "cnn4 has no batch-norm layer" in err
