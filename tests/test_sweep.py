"""`minicnn sweep` without Ray: the grid, the local engine, failed rows, --resume, and one-line errors."""
import csv
import json
import re
import sys

import pytest

from minicnn.cli import main
from minicnn.models import get_spec
from minicnn.sweep import EngineOptions, launch, parse_grid, reproduce_trials
from minicnn.sweep.trial import Outcome
from minicnn.train.errors import TrainError
from test_train_fixtures import write_colour_cifar10

QUICK = ["--device", "cpu", "--limit", "48", "--batch", "16", "--no-progress"]
DIVERGES = ["--set", "optimizer=sgd", "--set", "momentum=0"]  # no momentum or BN to damp lr 1e36


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_colour_cifar10(tmp_path_factory.mktemp("colour-cifar10"))


def run_cli(monkeypatch, capsys, *args):
    """`minicnn ARGS` in this process -> (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["minicnn", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_grid_is_the_product_in_the_order_given_with_each_field_typed():
    grid = parse_grid(["batch=32,50", "lr=1e-3,3e-4", "nesterov=true", "betas=0.9:0.99,0.5:0.9", "seed=1"])
    assert len(grid) == 8
    assert grid[0] == {"batch_size": 32, "lr": 0.001, "nesterov": True, "betas": (0.9, 0.99), "seed": 1}
    assert [(p["batch_size"], p["lr"], p["betas"]) for p in grid[:4]] == [
        (32, 0.001, (0.9, 0.99)), (32, 0.001, (0.5, 0.9)), (32, 0.0003, (0.9, 0.99)), (32, 0.0003, (0.5, 0.9))]
    assert type(grid[0]["batch_size"]) is int and type(grid[0]["lr"]) is float
    assert parse_grid(["lr_milestones=none,5:8"]) == [{"lr_milestones": ()}, {"lr_milestones": (5, 8)}]
    assert parse_grid([]) == [{}]  # no --set: one trial with the recipe as it is


@pytest.mark.parametrize("assignments, message", [
    (["lr="], "empty grid: --set lr= lists no values"),
    (["lrr=0.1"], "--set lrr: not a recipe field; fields are: augmentation, batch_size"),
    (["lr"], "--set 'lr': expected FIELD=v1,v2"),
    (["batch=3.5"], "--set batch_size: '3.5' is not an integer"),
    (["lr=0.1,0.10"], "--set lr lists one value twice (0.1 and 0.10)"),
    (["lr=0.1", "lr=0.2"], "--set lr is given twice"),
])
def test_bad_grids_are_one_line_errors(assignments, message):
    with pytest.raises(TrainError) as error:
        parse_grid(assignments)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_local_sweep_keeps_going_past_a_diverging_trial_and_resume_reruns_nothing(tmp_path, data_dir, monkeypatch,
                                                                                 capsys):
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--arch", "cnn4", "--set", "lr=0.01,1e36", *DIVERGES,
                             "--epochs", 2, "--data", data_dir, "--out", tmp_path, *QUICK)
    assert code == 0, err
    folder = next(tmp_path.glob("sweep-*"))
    good, bad = folder / "cnn4-lr0.01-optimizersgd-momentum0", folder / "cnn4-lr1e+36-optimizersgd-momentum0"
    # the progress lines are the epochs' figures, as metrics.csv has them
    metrics = list(csv.DictReader((good / "metrics.csv").open()))
    for row in metrics:
        assert (f"{good.name}: epoch {row['epoch']}/2, val {float(row['val_acc']):.2%}, "
                f"{float(row['images_per_s']):.0f} img/s") in out
    assert float(metrics[1]["train_loss"]) < float(metrics[0]["train_loss"])  # it trained
    result = json.loads((good / "result.json").read_text())
    lines = (folder / "sweep.md").read_text().splitlines()
    assert (f"| {good.name} | 0.01 | sgd | 0 | {result['test_accuracy']:.2%} (best, epoch {result['epoch_tested']}) |"
            in lines[6])
    reason = json.loads((bad / "trial.json").read_text())["reason"]
    assert re.match(r"loss became (inf|nan) at epoch 1, step \d of 3; stopped\. ", reason) and "\n" not in reason
    assert f"| {bad.name} | 1e+36 | sgd | 0 | failed: {reason} | - | 0 of 2 |" in lines[7]
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [(r["run"], r["lr"], r["status"]) for r in rows] == [(good.name, "0.01", "done"), (bad.name, "1e+36", "failed")]
    assert float(rows[0]["test_accuracy"]) == result["test_accuracy"] and rows[1]["reason"] == reason

    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npz")}
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--resume", folder, "--no-progress")
    assert code == 0, err
    assert "2 of 2 trials already finished" in out and {p: p.stat().st_mtime_ns for p in before} == before
    assert (folder / "sweep.md").read_text().splitlines() == lines


def test_a_reproduce_plan_writes_reproduce_s_own_table_and_a_csv(tmp_path, data_dir):
    trials = reproduce_trials([get_spec("cnn4"), get_spec("A2")], epochs=1, limit=32, device="cpu", data=str(data_dir))
    table = launch(EngineOptions(), kind="reproduce", trials=trials, out=tmp_path, progress=False,
                   notes={"epochs": 1, "limit": 32}, log=lambda message: None)
    text = table.read_text()
    assert table.name == "reproduce.md" and "Epochs set to 1 for a quick look" in text and "first 32 images" in text
    result = json.loads((table.parent / "cnn4" / "result.json").read_text())
    row = f"| cnn4 | A2 | 72.87% (loss 1.140) | {result['test_accuracy']:.2%} (best, epoch 1) | 1 of 300 |"
    assert row in text and text.count("| cnn4 | A2 |") == 2  # one folder each: cnn4 and cnn4-2
    assert (table.parent / "cnn4-2" / "result.json").is_file()
    rows = list(csv.DictReader((table.parent / "reproduce.csv").open()))
    assert [r["reported_accuracy"] for r in rows] == ["0.7287", "0.7287"] and rows[0]["status"] == "done"


@pytest.mark.parametrize("args, message", [
    (["sweep", "--arch", "cnn4", "--set", "lr="], "empty grid: --set lr= lists no values"),
    (["sweep", "--arch", "cnn4", "--set", "colour=red"], "--set colour: not a recipe field"),
    (["sweep", "--arch", "cnn4", "--set", "lr=0.1,0.2", "--lr", "0.1"], "lr is both fixed by a flag and swept"),
    (["sweep", "--arch", "cnn4", "--set", "optimizer=adam,rmsprop"], "optimizer must be one of adam, sgd"),
    (["sweep", "--arch", "cnn4", "--gpus-per-run", "1"], "--gpus-per-run, --cpus-per-run and --copy-back need "
                                                         "--engine ray"),
    (["sweep", "--arch", "cnn4", "--engine", "spark"], "--engine must be one of local, ray, got 'spark'"),
    (["sweep", "--set", "lr=0.1"], "--arch NAME is required (or --resume SWEEP_DIR)"),
    (["sweep", "--resume", "{tmp}"], "--resume {tmp}: not a sweep folder"),
    (["sweep", "--resume", "{tmp}", "--lr", "0.1"], "--resume continues a sweep with its own settings; --lr cannot"),
    (["reproduce", "--resume", "{tmp}", "--report", "A"], "--resume continues a sweep with its own settings; --report"),
])
def test_user_errors_are_one_line_and_start_nothing(args, message, tmp_path, monkeypatch, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", str(tmp_path / "runs")] * (
        "--resume" not in args)
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("minicnn: error: ") and message.replace("{tmp}", str(tmp_path)) in err
    assert not (tmp_path / "runs").exists()


def test_engine_ray_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
    code, out, err = run_cli(monkeypatch, capsys, "reproduce", "--arch", "cnn4", "--engine", "ray", "--out", tmp_path)
    assert code == 1 and err == "minicnn: error: --engine ray needs Ray, an optional extra: " \
                                "pip install 'minicnn[ray]'\n"
    assert not list(tmp_path.iterdir())


def test_local_engine_stops_at_a_trial_s_ctrl_c(tmp_path, data_dir, monkeypatch):
    """A Ctrl-C inside a trial ends the local engine after that trial; the next trial never starts."""
    import minicnn.sweep.engines as engines
    started = []

    def interrupted_trial(trial, *args):
        started.append(trial.name)
        return Outcome(trial.name, "interrupted")
    monkeypatch.setattr(engines, "run_trial", interrupted_trial)
    trials = reproduce_trials([get_spec("cnn4"), get_spec("A1")], epochs=1, device="cpu", data=str(data_dir))
    messages = []
    assert launch(EngineOptions(), kind="reproduce", trials=trials, out=tmp_path, progress=False,
                  log=messages.append) is None
    assert started == ["cnn4"]
    folder = next(tmp_path.glob("reproduce-*"))
    assert messages[-1] == (f"interrupted: 2 of 2 trials unfinished, each keeps its last finished epoch; "
                            f"continue with `minicnn reproduce --no-progress --resume {folder}`")
