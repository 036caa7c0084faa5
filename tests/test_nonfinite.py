"""NaN, inf and exploding losses (issue 14, item 2): caught wherever they appear, never saved as
`best`, never written as bare NaN into JSON, refused by evaluate/predict/visualize."""
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from minicnn import nn, optim
from minicnn.models import get_spec
from minicnn.train import CheckpointError, DivergedError, TrainConfig, TrainError, load_checkpoint, train
from minicnn.train.checkpoint import save_checkpoint
from minicnn.train.evaluate import evaluate_checkpoint, predict_image
from minicnn.train.finite import finite_or_none, format_loss
from minicnn.viz.runs import load_run
from test_train_fixtures import colour_cifar, tiny_spec
from test_viz_cli import write_run


def linear(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes))  # no BN to tame a huge step


def sgd_spec(lr, epochs=2):
    return dataclasses.replace(tiny_spec(optimizer="sgd", momentum=0.0, lr=lr, epochs=epochs), build=linear)


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_divergence_in_the_last_step_of_an_epoch_stops_before_anything_is_saved(tmp_path):
    # one step per epoch: the step's own loss is finite, only the update it makes is not
    spec = sgd_spec(1e36)
    config = TrainConfig.from_spec(spec, device="cpu", limit=16)
    with pytest.raises(DivergedError) as error:
        train(config, run_dir=tmp_path / "run", spec=spec, data=colour_cifar(), progress=False, log=print)
    message = str(error.value)
    assert "validation (= test) loss" in message and "became NaN/inf in epoch 1; stopped." in message
    assert "last.npz keeps epoch 0" in message and "\n" not in message
    assert not (tmp_path / "run" / "best.npz").exists()
    kept = load_checkpoint(tmp_path / "run" / "last.npz")
    assert kept.meta["epoch"] == 0 and all(np.isfinite(a).all() for a in kept.model.values())


def test_an_exploded_but_finite_loss_is_flagged_once_in_scientific_notation(tmp_path):
    spec = sgd_spec(1e10, epochs=3)
    messages = []
    result = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run", spec=spec,
                   data=colour_cifar(), progress=False, log=messages.append)
    losses = [row["train_loss"] for row in result.history]
    assert all(np.isfinite(losses)) and min(losses) > 1e6  # it did explode, and stayed finite
    warnings = [m for m in messages if m.startswith("warning: the training loss")]
    assert len(warnings) == 1 and "far above chance level (2.30 for 10 classes)" in warnings[0]
    epoch_lines = [m for m in messages if m.startswith("epoch ")]
    assert all("e+" in line.split("train loss ")[1].split()[0] for line in epoch_lines), epoch_lines
    summary = strict_json((result.run_dir / "result.json").read_text())
    assert summary["test_loss"] is None or np.isfinite(summary["test_loss"])


def test_losses_print_in_sane_notation_and_json_gets_null_for_nan():
    assert format_loss(2.302585) == "2.3026" and format_loss(9.3e30) == "9.300e+30"
    assert format_loss(0.0) == "0.0000" and format_loss(4e-5) == "4.000e-05" and format_loss(float("nan")) == "nan"
    assert finite_or_none(float("nan")) is None and finite_or_none(float("inf")) is None
    assert finite_or_none(1.5) == 1.5 and finite_or_none(None) is None


def test_infinite_lr_is_refused_up_front():
    with pytest.raises(TrainError, match="--lr must be positive and finite, got inf"):
        TrainConfig.from_spec(tiny_spec(), lr=float("inf"))


@pytest.fixture
def nan_checkpoint(tmp_path):
    spec = tiny_spec(epochs=1)
    result = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run", spec=spec,
                   data=colour_cifar(), progress=False, log=lambda message: None)
    model = spec.build(10)
    model.load_state_dict(load_checkpoint(result.run_dir / "best.npz").model)
    model.conv1.weight.data[0, 0, 0, 0] = np.nan
    meta = load_checkpoint(result.run_dir / "best.npz").meta
    return save_checkpoint(result.run_dir / "diverged", model, optim.Adam(model.parameters()), meta), spec


def test_evaluate_and_predict_refuse_non_finite_weights(nan_checkpoint, tmp_path):
    path, spec = nan_checkpoint
    expected = f"{path}: its weights are not finite (NaN/inf in conv1.weight); it comes from a diverged run"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    calls = [lambda: evaluate_checkpoint(path, device="cpu", spec=spec, data=colour_cifar()),
             lambda: predict_image(path, tmp_path / "black.png", spec=spec)]
    for call in calls:
        with pytest.raises(CheckpointError) as error:
            call()
        assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_visualize_refuses_non_finite_weights(tmp_path):
    folder = write_run(tmp_path / "run", "cnn4", tmp_path)
    checkpoint = load_checkpoint(folder / "best.npz")
    model = get_spec("cnn4").build(10)
    state = dict(checkpoint.model)
    state["fc1.bias"] = np.full_like(state["fc1.bias"], np.inf)
    model.load_state_dict(state)
    save_checkpoint(folder / "best", model, optim.Adam(model.parameters()), checkpoint.meta)
    with pytest.raises(CheckpointError, match=r"its weights are not finite \(NaN/inf in fc1.bias\)"):
        load_run(folder, device="cpu")
