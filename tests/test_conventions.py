"""Help texts and conventions (issue 14, items 5 and 7): defaults shown, --version, progress bars
only on a terminal (with an ETA from the first steps), one note for a run that will take hours,
the banner under --limit, and "the latest run" finding reproduce's nested runs."""
import os
import subprocess
import sys
import time

import pytest

from minicnn.train import TrainConfig, train
from minicnn.viz.runs import latest_run
from test_train_fixtures import colour_cifar, tiny_spec, write_colour_cifar10
from test_viz_cli import write_run

MINICNN = [sys.executable, "-c", "from minicnn.cli import main; main()"]


def minicnn(*args, **kwargs):
    return subprocess.run(MINICNN + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)


def test_version():
    done = minicnn("--version")
    assert done.returncode == 0 and done.stdout == "minicnn 0.1.0\n"


def test_help_keeps_its_defaults_and_no_stray_full_stops():
    text = " ".join(minicnn("train", "--help").stdout.split())  # wrapping undone
    assert "cuda or emu. [default: auto]" in text and "augmentation. [default: 0]" in text
    assert "background thread. [default: 0]" in text and "[default: runs]" in text
    assert " ." not in text
    assert "--no-progress" in minicnn("visualize", "--help").stdout


def quick_run(tmp_path, messages, **overrides):
    spec = tiny_spec(epochs=2)
    config = TrainConfig.from_spec(spec, device="cpu", **overrides)
    return train(config, run_dir=tmp_path / "run", spec=spec, data=colour_cifar(), progress=False,
                 log=messages.append)


def test_the_banner_counts_the_images_a_limited_run_uses(tmp_path):
    messages = []
    quick_run(tmp_path, messages, limit=32)
    assert "cifar10: train 32 of 96, validation = the test set, test 32 of 48;" in messages[0]


def test_a_long_run_is_announced_once_with_the_flags_that_shorten_it(tmp_path, monkeypatch):
    import minicnn.train.loop as loop
    messages = []
    quick_run(tmp_path / "short", messages)
    assert not [m for m in messages if m.startswith("note: this run will take")]  # a short run says nothing
    monkeypatch.setattr(loop, "LONG_RUN", 0)  # every run counts as long
    monkeypatch.setattr(loop, "LOG_EVERY", 2)
    messages = []
    quick_run(tmp_path / "long", messages)
    notes = [m for m in messages if m.startswith("note: this run will take")]
    assert len(notes) == 1, messages
    assert "hours on cpu (" in notes[0] and "6 steps per epoch, 2 epochs to go" in notes[0]
    assert notes[0].endswith("shorten it with --epochs N or --limit N, or train on a GPU with --device cuda")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_colour_cifar10(tmp_path_factory.mktemp("colour-cifar10"))


def test_progress_bars_stay_out_of_a_redirected_log(tmp_path, data_dir):
    done = minicnn("train", "--arch", "cnn4", "--data", data_dir, "--out", tmp_path, "--epochs", 1,
                   "--device", "cpu", "--limit", 32, "--batch", 16, cwd=tmp_path)  # no --no-progress
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr and "%|" not in done.stderr


def test_on_a_terminal_the_epoch_bar_has_an_eta_within_the_first_epoch(tmp_path, data_dir):
    pty, fcntl, termios, struct = (pytest.importorskip(name) for name in ("pty", "fcntl", "termios", "struct"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # a pty starts 0 columns wide
    process = subprocess.Popen(MINICNN + ["train", "--arch", "cnn4", "--data", str(data_dir), "--out", str(tmp_path),
                                          "--epochs", "2", "--device", "cpu", "--limit", "48", "--batch", "2"],
                               stdout=subprocess.DEVNULL, stderr=slave, cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=300) == 0
    frames = b"".join(chunks).decode(errors="replace").replace("\n", "\r").split("\r")
    epoch_bar = [frame for frame in frames if "/2 epochs [" in frame]
    partial = [frame for frame in epoch_bar if " 0.83/2 epochs [" in frame]  # epoch 1's first check: 20 of 24 steps
    assert partial and "<?" not in partial[-1], epoch_bar


def test_the_latest_run_includes_runs_nested_by_reproduce(tmp_path):
    write_run(tmp_path / "runs" / "cnn4-old", "cnn4", tmp_path)
    time.sleep(0.05)
    nested = write_run(tmp_path / "runs" / "reproduce-x" / "cnn4-new", "cnn4", tmp_path)
    assert latest_run(tmp_path / "runs") == nested
