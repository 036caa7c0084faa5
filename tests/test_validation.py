"""Bad input is one line naming the flag (issue 14, item 6): limits, --top, --seed, --data on a
file, a PNG given as a checkpoint, `data` errors, OS errors, long mismatch lists, early Ctrl-C."""
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minicnn import optim
from minicnn.cli import _one_line
from minicnn.models import get_spec
from minicnn.train import CheckpointError
from minicnn.train.checkpoint import load_checkpoint, restore, save_checkpoint
from test_train_fixtures import one_line_error


@pytest.mark.parametrize("args, message", [
    (["visualize", "--limit", "0"], "--limit must be at least 1, got 0"),
    (["visualize", "--limit", "-1"], "--limit must be at least 1, got -1"),
    (["evaluate", "{tmp}", "--limit", "-1"], "--limit must be at least 1, got -1"),
    (["predict", "{tmp}/a.npz", "{tmp}/a.png", "--top", "0"], "--top must be at least 1, got 0"),
    (["predict", "{tmp}/a.npz", "{tmp}/a.png", "--top", "-1"], "--top must be at least 1, got -1"),
    (["train", "--arch", "cnn4", "--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["reproduce", "--arch", "cnn4", "--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["gradcheck", "--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["train", "--arch", "cnn4", "--data", "{tmp}/a.png"], "{tmp}/a.png is a file, not a folder: point --data"),
    (["data", "info", "--data", "{tmp}/a.png"], "{tmp}/a.png is a file, not a folder"),
    (["data", "download", "cifar7"], "unknown dataset 'cifar7'"),
    (["predict", "{tmp}/a.png", "{tmp}/a.png"], "{tmp}/a.png: not a checkpoint (minicnn checkpoints are .npz"),
])
def test_bad_values_are_one_line_errors_naming_the_flag(args, message, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    err = one_line_error(args, tmp_path, monkeypatch, capsys)  # exit code 1, one 'minicnn: error:' line
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "allow_pickle" not in err and "--root" not in err


def test_os_errors_read_as_sentences_not_errno():
    error = PermissionError(13, "Permission denied", "/runs/x")
    assert _one_line(error) == "/runs/x: permission denied"
    assert _one_line(ValueError("plain")) == "plain"


def test_a_wrong_architecture_lists_the_first_mismatches_and_a_count(tmp_path):
    model = get_spec("vgg8_bn").build(10)
    save_checkpoint(tmp_path / "vgg", model, optim.Adam(model.parameters()), {"config": {"arch": "vgg8_bn"}})
    with pytest.raises(CheckpointError) as error:
        restore(load_checkpoint(tmp_path / "vgg.npz"), get_spec("resnet20").build(10))
    message = str(error.value)
    assert "(a 'vgg8_bn' checkpoint) does not fit this model (160 mismatches): conv1.weight: checkpoint " \
           "(32, 3, 3, 3) vs model (16, 3, 3, 3);" in message
    assert message.endswith("; and 155 more") and len(message) < 400 + len(str(tmp_path))


def test_ctrl_c_while_the_commands_load_is_one_line_and_sigint():
    result = subprocess.run([sys.executable, "-c", "import minicnn.cli\nraise KeyboardInterrupt"],
                            capture_output=True, text=True, timeout=120)
    assert result.stderr == "minicnn: interrupted\n"
    assert result.returncode == -signal.SIGINT  # the shell reports 130
