"""`--engine ray` on a local Ray: one Ray start for the session (2 CPUs and 2 logical GPUs, which test
the resource requests; no device is behind them, trials train on the CPU)."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

ray = pytest.importorskip("ray", reason="Ray is not installed; pip install -e '.[test,ray]' runs these tests")

from minicnn.models import get_spec  # noqa: E402 - after the skip
from minicnn.sweep import EngineOptions, launch, parse_grid, sweep_trials  # noqa: E402
from minicnn.sweep.trial import scratch_dir  # noqa: E402
from minicnn.train import TrainConfig, load_checkpoint, train  # noqa: E402
from sigint import children_interruptible, start_interruptible  # noqa: E402
from test_sweep import DIVERGES, QUICK, data_dir, run_cli  # noqa: E402,F401 - data_dir is a fixture

MINICNN = [sys.executable, "-c", "from minicnn.cli import main; main()"]


@pytest.fixture(scope="session")
def cluster():
    """The session's Ray; yields its address, which a second driver (a subprocess) can join."""
    with children_interruptible():  # Ray's processes: a cancelled trial must see its KeyboardInterrupt
        context = ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
                           logging_level="ERROR")
    yield context.address_info["gcs_address"]
    ray.shutdown()


def epochs_in(run_dir):
    return [int(row["epoch"]) for row in csv.DictReader((run_dir / "metrics.csv").open())]


def saved_epoch(run_dir):
    """The epoch last.npz holds (read as resume reads it), 0 before it exists."""
    try:
        return load_checkpoint(run_dir / "last.npz").meta["epoch"]
    except Exception:  # noqa: BLE001 - not written yet, or being replaced right now
        return 0


def wait_until(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)


def test_four_trials_on_ray_give_the_table_and_a_progress_line_per_epoch(cluster, tmp_path, data_dir, monkeypatch,
                                                                         capsys):
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--arch", "cnn4", "--set", "lr=1e-3,3e-3",
                             "--set", "seed=0,1", "--epochs", 2, "--engine", "ray", "--gpus-per-run", 1,
                             "--data", data_dir, "--out", tmp_path, *QUICK)
    assert code == 0, err
    folder = next(tmp_path.glob("sweep-*"))
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [(r["lr"], r["seed"], r["status"]) for r in rows] == [
        ("0.001", "0", "done"), ("0.001", "1", "done"), ("0.003", "0", "done"), ("0.003", "1", "done")]
    table = (folder / "sweep.md").read_text()
    for row in rows:
        run_dir = folder / row["run"]
        result = json.loads((run_dir / "result.json").read_text())
        assert float(row["test_accuracy"]) == result["test_accuracy"] and epochs_in(run_dir) == [1, 2]
        assert f"| {row['run']} | {row['lr']} | {row['seed']} | {result['test_accuracy']:.2%} (best," in table
        assert json.loads((run_dir / "trial.json").read_text()) == {"status": "done", "reason": None, "attempts": 1}
        last = list(csv.DictReader((run_dir / "metrics.csv").open()))[-1]
        assert f"{row['run']}: epoch 2/2, val {float(last['val_acc']):.2%}, " in out
    # seeds change the run, the grid's values reach the trial's config
    assert json.loads((folder / rows[2]["run"] / "config.json").read_text())["recipe"]["lr"] == 0.003
    first, other_seed = (np.load(folder / r["run"] / "last.npz")["model.conv1.weight"] for r in rows[:2])
    assert not np.array_equal(first, other_seed)


def test_a_killed_worker_is_retried_and_continues_from_its_last_checkpoint(cluster, tmp_path, data_dir):
    trials = sweep_trials(get_spec("cnn4"), parse_grid(["lr=1e-3,2e-3"]), epochs=8, batch_size=16, limit=48,
                          device="cpu", data=str(data_dir))
    messages, tables = [], []
    driver = threading.Thread(target=lambda: tables.append(
        launch(EngineOptions("ray"), kind="sweep", trials=trials, out=tmp_path, progress=False, log=messages.append)))
    driver.start()
    victim = trials[0].name
    started = re.compile(rf"{victim}: running from the start on .* pid (\d+)")
    wait_until(lambda: any(started.match(m) for m in messages), "start of the trial")
    pid = int(next(started.match(m) for m in messages if started.match(m)).group(1))
    run_dir = next(tmp_path.glob("sweep-*")) / victim
    wait_until(lambda: saved_epoch(run_dir) >= 1, "first epoch")
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=240)
    assert not driver.is_alive() and tables and tables[0].is_file()

    again = [m for m in messages if m.startswith(f"{victim}: running (attempt 2) from epoch")]
    assert len(again) == 1, messages
    resumed_after = int(again[0].split("from epoch ")[1].split()[0])
    assert resumed_after >= 1 and f"resuming {run_dir} after epoch {resumed_after}" in (run_dir / "train.log").read_text()
    assert epochs_in(run_dir) == list(range(1, 9))  # each epoch once: at most the one in progress was redone
    rows = list(csv.DictReader((tables[0].parent / "sweep.csv").open()))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert json.loads((run_dir / "trial.json").read_text())["attempts"] == 2
    # bit for bit the run that was never killed, summed in the same order: Ray gives a 1-CPU task one BLAS thread
    with threadpool_limits(1):
        reference = train(TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())),
                          run_dir=tmp_path / "reference", progress=False, log=lambda message: None)
    expected, got = (load_checkpoint(folder / "last.npz").model for folder in (reference.run_dir, run_dir))
    assert all(np.array_equal(expected[key], got[key]) for key in expected)


def test_a_diverging_trial_is_a_failed_row_and_copy_back_brings_the_run_folders_home(cluster, tmp_path, data_dir,
                                                                                    monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--arch", "cnn4", "--set", "lr=0.01,1e36", *DIVERGES,
                             "--epochs", 1, "--engine", "ray", "--copy-back", "--data", data_dir, "--out", tmp_path,
                             *QUICK)
    assert code == 0, err
    folder = next(tmp_path.glob("sweep-*"))
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert re.match(r"loss became (inf|nan) at epoch 1, step \d of 3; stopped\. ", rows[1]["reason"])
    assert f"| {rows[1]['run']} | 1e+36 | sgd | 0 | failed: {rows[1]['reason']} |" in (folder / "sweep.md").read_text()
    good, bad = (folder / r["run"] for r in rows)
    copied = {"config.json", "metrics.csv", "best.npz", "last.npz", "result.json", "train.log", "curves.png"}
    assert copied <= {p.name for p in good.iterdir()} and {"last.npz", "train.log"} <= {p.name for p in bad.iterdir()}
    assert load_checkpoint(good / "best.npz").meta["epoch"] == 1
    token = json.loads((folder / "sweep.json").read_text())["token"]
    assert not scratch_dir(token, rows[0]["run"]).exists() and not scratch_dir(token, rows[1]["run"]).exists()


def test_ctrl_c_stops_the_sweep_and_the_printed_command_runs_only_what_is_missing(cluster, tmp_path, data_dir,
                                                                                   monkeypatch, capsys):
    out = tmp_path / "runs"
    driver = start_interruptible(MINICNN + ["sweep", "--arch", "cnn4", "--set", "epochs=1,8", "--set", "lr=1e-3,2e-3",
                                            "--engine", "ray", "--address", cluster, "--data", str(data_dir),
                                            "--out", str(out), *QUICK],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(list(out.glob("sweep-*/*/trial.json"))) == 2 and
               any(saved_epoch(run) >= 1 for run in out.glob("sweep-*/cnn4-epochs8-*")), "two finished trials")
    folder = next(out.glob("sweep-*"))
    finished = {p: p.stat().st_mtime_ns for p in folder.glob("cnn4-epochs1-*/*")}
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert "Traceback" not in stderr
    command = f"minicnn sweep --engine ray --address {cluster} --no-progress --resume {folder}"
    assert f"interrupted: 2 of 4 trials unfinished, each keeps its last finished epoch; continue with `{command}`" \
        in stdout
    assert not (folder / "sweep.md").exists()

    code, stdout, stderr = run_cli(monkeypatch, capsys, *command.split()[1:])  # this process: its workers are warm
    assert code == 0, stderr
    assert f"{folder}: 2 of 4 trials already finished" in stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished trials were not touched
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [(r["epochs"], r["status"]) for r in rows] == [("1", "done"), ("1", "done"), ("8", "done"), ("8", "done")]
    for row in rows[2:]:
        assert epochs_in(folder / row["run"]) == list(range(1, 9))
    assert any("resuming" in (folder / r["run"] / "train.log").read_text() for r in rows[2:])


@pytest.mark.parametrize("flags, message", [
    (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9 does not answer"),
    (["--gpus-per-run", "3"], "--gpus-per-run 3: no node of the cluster has that many GPUs (the most on one node: 2)"),
    (["--cpus-per-run", "4"], "--cpus-per-run 4: no node of the cluster has that many CPUs (the most on one node: 2)"),
])
def test_cluster_errors_are_one_line_and_start_nothing(cluster, flags, message, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "reproduce", "--report", "A", "--engine", "ray", *flags,
                             "--out", tmp_path / "runs")
    assert code == 1 and err.count("\n") == 1 and err.startswith("minicnn: error: "), err
    assert message in err and not (tmp_path / "runs").exists()
