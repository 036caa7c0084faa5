"""Run folders under real use (issue 14, items 1 and 4): claimed atomically, locked while training,
a stale lock of a killed process taken over, a broken last checkpoint resumed around."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from minicnn.train import TrainConfig, TrainError, load_checkpoint, resume, train
from minicnn.train.runfolder import LOCK_NAME, RunLock, claim_folder
from test_train_fixtures import colour_cifar, tiny_spec

QUIET = dict(progress=False, log=lambda message: None)


def test_parallel_claims_of_one_name_get_distinct_folders(tmp_path):
    claimed, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        claimed.append(claim_folder(tmp_path / "runs", "cnn4-20261130-120000"))
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = sorted(folder.name for folder in claimed)
    assert names == sorted(["cnn4-20261130-120000"] + [f"cnn4-20261130-120000-{n}" for n in range(2, 9)])


TRAIN_IN_THE_SAME_SECOND = """
import sys, time
sys.path.insert(0, {tests!r})
time.strftime = lambda pattern: "20261130-120000"  # both processes start 'in the same second'
from minicnn.train import TrainConfig, train
from test_train_fixtures import colour_cifar, tiny_spec
spec = tiny_spec(epochs=1)
result = train(TrainConfig.from_spec(spec, device="cpu", lr={lr}), out={out!r}, spec=spec, data=colour_cifar(),
               progress=False, log=lambda message: None)
print(result.run_dir)
"""


def test_two_trainings_started_in_the_same_second_keep_their_own_files(tmp_path):
    # two processes, as `for lr in ...; do minicnn train ... & done` starts them
    processes = {lr: subprocess.Popen([sys.executable, "-c", TRAIN_IN_THE_SAME_SECOND.format(
                     tests=str(Path(__file__).parent), lr=lr, out=str(tmp_path))], stdout=subprocess.PIPE, text=True)
                 for lr in (1e-3, 1e-2)}
    folders = {}
    for lr, process in processes.items():
        stdout, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        folders[lr] = Path(stdout.strip())
    assert sorted(folder.name for folder in folders.values()) == ["tiny-20261130-120000", "tiny-20261130-120000-2"]
    for lr, folder in folders.items():
        assert TrainConfig.from_dict(json.loads((folder / "config.json").read_text())).recipe.lr == lr
        assert load_checkpoint(folder / "best.npz").meta["config"]["recipe"]["lr"] == lr
        assert not (folder / LOCK_NAME).exists()  # released at the end


def test_resuming_a_run_that_is_still_training_is_refused_naming_the_owner(tmp_path):
    spec = tiny_spec(epochs=1)
    done = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run", spec=spec,
                 data=colour_cifar(), **QUIET)
    with RunLock(done.run_dir, "test"):  # as a training process holds it
        with pytest.raises(TrainError) as error:
            resume(done.run_dir, epochs=2, spec=spec, data=colour_cifar(), **QUIET)
    message = str(error.value)
    assert message.startswith(f"--resume {done.run_dir}: this run is in use by pid {os.getpid()} "
                              f"on host {socket.gethostname()}") and "\n" not in message
    assert resume(done.run_dir, epochs=2, spec=spec, data=colour_cifar(), **QUIET).history[-1]["epoch"] == 2


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    spec = tiny_spec(epochs=1)
    done = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run", spec=spec,
                 data=colour_cifar(), **QUIET)
    holder = subprocess.run([sys.executable, "-c", f"import os, signal\nfrom minicnn.train.runfolder import RunLock\n"
                             f"with RunLock({str(done.run_dir)!r}, 'x'):\n    print(os.getpid(), flush=True)\n"
                             f"    os.kill(os.getpid(), signal.SIGKILL)"], capture_output=True, text=True, timeout=60)
    assert holder.returncode == -signal.SIGKILL and (done.run_dir / LOCK_NAME).exists()  # left behind
    messages = []
    resumed = resume(done.run_dir, epochs=2, spec=spec, data=colour_cifar(), progress=False, log=messages.append)
    assert resumed.history[-1]["epoch"] == 2
    assert f"took over the lock of pid {holder.stdout.strip()} on host {socket.gethostname()}" in messages[0]
    assert not (done.run_dir / LOCK_NAME).exists()


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_out_folder_that_cannot_hold_runs_is_one_line(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    else:
        out.mkdir()
        out.chmod(0o500)
        if os.access(out, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(TrainError) as error:
        claim_folder(out, "cnn4-x")
    why = "a file is in the way, not a folder" if kind == "file" else "no permission to write there"
    assert str(error.value) == f"--out {out}: cannot create a run folder there ({why})"


def test_a_truncated_last_checkpoint_resumes_from_the_newest_intact_one(tmp_path):
    """(issue 14, item 4) last.npz cut short, epoch-003.npz too: resume says what it uses, and the
    result equals a run that was never interrupted."""
    spec = tiny_spec(checkpoint="every-epoch", lr=0.01, epochs=3)
    config = TrainConfig.from_spec(spec, device="cpu")
    broken = train(config, run_dir=tmp_path / "broken", spec=spec, data=colour_cifar(), **QUIET).run_dir
    for name in ("last.npz", "epoch-003.npz"):
        (broken / name).write_bytes((broken / name).read_bytes()[:500])
    intact = [load_checkpoint(broken / name).meta["epoch"] for name in ("best.npz", "epoch-002.npz")]
    newest = max(intact)
    messages = []
    resumed = resume(broken, epochs=4, spec=spec, data=colour_cifar(), progress=False, log=messages.append)
    source = "epoch-002.npz" if newest == 2 else "best.npz"
    assert messages[0].startswith(f"{broken / 'last.npz'}: unreadable checkpoint, truncated or corrupt; "
                                  f"resuming from {source} instead (epoch {newest}): {3 - newest} epoch(s) "
                                  f"will be trained again"), messages[0]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    whole = train(config.replace(epochs=4), run_dir=tmp_path / "whole", spec=spec, data=colour_cifar(), **QUIET)
    expected, got = load_checkpoint(whole.run_dir / "last.npz").model, load_checkpoint(broken / "last.npz").model
    assert all(np.array_equal(expected[key], got[key]) for key in expected)


def test_a_run_whose_every_checkpoint_is_broken_is_one_line(tmp_path):
    spec = tiny_spec(epochs=1)
    broken = train(TrainConfig.from_spec(spec, device="cpu"), run_dir=tmp_path / "run", spec=spec,
                   data=colour_cifar(), **QUIET).run_dir
    for path in broken.glob("*.npz"):
        path.write_bytes(b"PK")
    with pytest.raises(TrainError) as error:
        resume(broken, epochs=2, spec=spec, data=colour_cifar(), **QUIET)
    assert "no other checkpoint in" in str(error.value) and "\n" not in str(error.value)
