"""The training loop in process: run folder contents, exact resume, divergence, checkpoint errors."""
import csv
import dataclasses
import json

import numpy as np
import pytest

from minicnn import nn
from minicnn.train import (CheckpointError, DivergedError, TrainConfig, TrainError, load_checkpoint, resume,
                           save_checkpoint, train)
from minicnn.train.checkpoint import restore
from minicnn.train.loop import Trainer
from minicnn.train.reproduce import shortened
from test_train_fixtures import colour_cifar, tiny_spec

QUIET = dict(progress=False, log=lambda message: None)


def run(tmp_path, spec, name="run", data=None, **overrides):
    config = TrainConfig.from_spec(spec, device="cpu", **overrides)
    return train(config, run_dir=tmp_path / name, spec=spec, data=data or colour_cifar(), **QUIET)


def arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta.json"}


def test_run_folder_holds_config_metrics_curves_and_checkpoints(tmp_path):
    spec = tiny_spec(lr=0.01, epochs=4)
    result = run(tmp_path, spec)
    folder = result.run_dir
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "metrics.csv", "curves.png", "best.npz", "best.json", "last.npz", "last.json",
            "result.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert json.loads((folder / "config.json").read_text())["recipe"]["lr"] == 0.01
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                             "images_per_s"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # the colour data is learnable
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # best is the epoch of highest validation accuracy, and the test figure comes from it
    val = [float(r["val_acc"]) for r in rows]
    best = load_checkpoint(folder / "best.npz")
    assert best.meta["epoch"] == result.best_epoch == 1 + int(np.argmax(val))
    assert result.tested == "best" and result.test_accuracy == pytest.approx(max(val))  # validation = test here
    last = load_checkpoint(folder)  # a folder means its best checkpoint
    assert last.path.name == "best.npz"
    assert load_checkpoint(folder / "last.json").meta["epoch"] == 4
    # the .json beside the .npz is the same metadata as the copy inside it
    assert json.loads((folder / "last.json").read_text())["history"] == load_checkpoint(folder / "last.npz").meta["history"]


def test_every_epoch_rule_keeps_each_epoch_and_tests_the_last(tmp_path):
    result = run(tmp_path, tiny_spec(checkpoint="every-epoch", epochs=2))
    assert (result.run_dir / "epoch-001.npz").is_file() and (result.run_dir / "epoch-002.json").is_file()
    assert result.tested == "last" and result.epoch_tested == 2


def test_improvements_rule_snapshots_each_epoch_that_beat_the_best(tmp_path):
    result = run(tmp_path, tiny_spec(checkpoint="improvements", lr=0.01, epochs=4))
    val = [row["val_acc"] for row in result.history]
    improved = [i + 1 for i, acc in enumerate(val) if acc > max(val[:i], default=-1)]
    snapshots = sorted(int(p.stem.split("-")[1]) for p in result.run_dir.glob("epoch-*.npz"))
    assert snapshots == improved and snapshots[0] == 1
    assert result.tested == "best"


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    # augmentation, shuffling, dropout masks, BN statistics and Adam moments all have to carry over;
    # the resumed half also prefetches batches in a thread, which must not change anything
    spec = tiny_spec(lr=0.01, epochs=3, augmentation="keras_shift_flip", lr_milestones=(1,), lr_gamma=0.5)
    whole = run(tmp_path, spec, "whole")
    run(tmp_path, spec, "split", epochs=1)
    resumed = resume(tmp_path / "split", epochs=3, workers=2, spec=spec, data=colour_cifar(), **QUIET)
    a, b = arrays(whole.run_dir / "last.npz"), arrays(resumed.run_dir / "last.npz")
    assert a.keys() == b.keys() and "model.dropout1.step" in a and "optimizer.exp_avg_sq.0" in a
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in whole.history]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in resumed.history]
    assert [row["lr"] for row in resumed.history] == [0.01, 0.005, 0.005]
    assert resumed.test_accuracy == whole.test_accuracy
    rows = list(csv.DictReader((resumed.run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_resume_refuses_a_finished_run_and_a_folder_that_is_not_a_run(tmp_path):
    spec = tiny_spec(epochs=1)
    run(tmp_path, spec)
    with pytest.raises(TrainError, match="already trained 1 of 1 epochs; pass --epochs"):
        resume(tmp_path / "run", spec=spec, data=colour_cifar(), **QUIET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="not a run folder"):
        resume(tmp_path / "empty", spec=spec, **QUIET)


def test_ctrl_c_keeps_the_last_finished_epoch(tmp_path):
    spec = tiny_spec(epochs=5)
    calls = {"n": 0}

    def interrupting_net(num_classes=10):
        net = spec.build(num_classes)
        original = net.forward

        def forward(x):
            calls["n"] += 1
            if calls["n"] == 6 + 3 + 2:  # epoch 1: 6 steps + 3 validation batches; then 2 steps of epoch 2
                raise KeyboardInterrupt
            return original(x)
        net.forward = forward
        return net

    messages = []
    result = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run",
                   spec=dataclasses.replace(spec, build=interrupting_net), data=colour_cifar(),
                   progress=False, log=messages.append)
    assert result.interrupted and result.test_accuracy is None and len(result.history) == 1
    assert f"minicnn train --resume {tmp_path / 'run'}" in messages[-1] and "holds epoch 1 of 5" in messages[-1]
    assert load_checkpoint(tmp_path / "run" / "last.npz").meta["epoch"] == 1


def test_ctrl_c_while_checkpoints_are_written_still_leaves_a_consistent_set(tmp_path, monkeypatch):
    import minicnn.train.loop as loop
    real_save, interrupted = loop.save_checkpoint, []

    def save_interrupted_once(stem, model, optimizer, meta):
        if stem.name == "best" and meta["epoch"] >= 2 and not interrupted:  # a later best.npz is cut short
            interrupted.append(meta["epoch"])
            raise KeyboardInterrupt
        return real_save(stem, model, optimizer, meta)
    monkeypatch.setattr(loop, "save_checkpoint", save_interrupted_once)
    spec = tiny_spec(lr=0.01, epochs=6)
    result = run(tmp_path, spec)
    assert result.interrupted and interrupted
    last = load_checkpoint(result.run_dir / "last.npz").meta
    assert last["epoch"] == interrupted[0]  # the finished epoch was saved after all
    assert load_checkpoint(result.run_dir / "best.npz").meta["epoch"] == last["best"]["epoch"]
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    finished = resume(result.run_dir, spec=spec, data=colour_cifar(), **QUIET)
    assert len(finished.history) == 6 and finished.test_accuracy is not None


def test_a_diverging_loss_stops_with_the_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    linear = lambda k=10: nn.Sequential(nn.Flatten(), nn.Linear(3072, k))  # noqa: E731 - no BN to tame it
    spec = dataclasses.replace(tiny_spec(optimizer="sgd", momentum=0.0, lr=1e36, epochs=3), build=linear)
    with pytest.raises(DivergedError) as error:
        run(tmp_path, spec)
    message = str(error.value)
    assert message.startswith("loss became inf at epoch 1, step 2 of 6; stopped.") and "\n" not in message
    assert "last.npz keeps epoch 0" in message and "smaller --lr" in message
    kept = load_checkpoint(tmp_path / "run" / "last.npz")
    assert kept.meta["epoch"] == 0 and all(np.isfinite(a).all() for a in kept.model.values())


def test_truncated_checkpoint_is_a_one_line_error_naming_the_file(tmp_path):
    result = run(tmp_path, tiny_spec(epochs=1))
    path = result.run_dir / "last.npz"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: unreadable checkpoint, truncated or corrupt")
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nothing.npz")


def test_checkpoint_of_another_architecture_lists_the_mismatched_tensors(tmp_path):
    result = run(tmp_path, tiny_spec(epochs=1))
    checkpoint = load_checkpoint(result.run_dir / "last.npz")
    other = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(2048, 10))
    with pytest.raises(CheckpointError) as error:
        restore(checkpoint, other)
    message = str(error.value)
    assert "(a 'tiny' checkpoint) does not fit this model" in message and "\n" not in message
    assert "conv1.weight: checkpoint (4, 3, 3, 3) vs model (8, 3, 3, 3)" in message and "unexpected bn1.weight" in message


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch):
    """A crash while a checkpoint is written leaves the previous one whole (and no temp file)."""
    result = run(tmp_path, tiny_spec(epochs=1))
    stem = result.run_dir / "last"
    before = stem.with_suffix(".npz").read_bytes()
    trainer = Trainer(result.config, tiny_spec(epochs=1), result.run_dir, colour_cifar(), **QUIET)

    def crash(file, **arrays):
        file.write(b"half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(stem, trainer.model, trainer.optimizer, trainer.meta())
    assert stem.with_suffix(".npz").read_bytes() == before
    assert sorted(p.name for p in result.run_dir.iterdir() if p.name.startswith("."))  == []


def test_config_errors_are_one_line_train_errors():
    spec = tiny_spec()
    for overrides, text in [(dict(lr=-1.0), "--lr must be positive"), (dict(epochs=0), "--epochs must be at least 1"),
                            (dict(limit=0), "--limit must be at least 1"), (dict(device="tpu"), "--device must be"),
                            (dict(optimizer="rmsprop"), "optimizer must be one of adam, sgd"),
                            (dict(augmentation="spin"), "unknown augmentation 'spin'")]:
        with pytest.raises(ValueError, match=text):
            TrainConfig.from_spec(spec, **overrides)


def test_step_schedule_and_config_round_trip():
    config = TrainConfig.from_spec(tiny_spec(lr=0.1, lr_milestones=(2, 4), lr_gamma=0.1), seed=3)
    assert [config.lr_at(e) for e in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.recipe.lr_milestones == (2, 4)


def test_shortened_recipes_scale_epochs_and_milestones_together():
    recipe = tiny_spec(epochs=182, lr_milestones=(91, 136)).recipe
    assert shortened(recipe, epoch_scale=0.1) == {"epochs": 18, "lr_milestones": (9, 13)}  # 91 and 136 of 182 epochs
    assert shortened(recipe, epochs=2) == {"epochs": 2, "lr_milestones": (1,)}
    assert shortened(recipe) == {}
    with pytest.raises(TrainError, match="--epoch-scale must be positive"):
        shortened(recipe, epoch_scale=0)
