"""--precision fp32 | tf32 | bf16: devices, errors, and a short training run in each precision
on the emulator, whose loss falls like fp32's."""
import numpy as np
import pytest

from minicnn.backends import DeviceError, get_device
from minicnn.models import get_spec
from minicnn.train.config import TrainConfig
from test_device_parity import train_a_few_steps

STEPS = 8


def train_steps(precision):
    """Losses of STEPS Adam steps of test_device_parity's small net (conv, BN, pool, dropout,
    linear) on fixed images, on `emu` in `precision`."""
    losses, _ = train_a_few_steps(get_device("emu", precision=precision), np.float32, STEPS)
    return np.array(losses)


@pytest.fixture(scope="module")
def fp32_losses():
    return train_steps("fp32")


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_a_short_run_lowers_the_loss_like_fp32(fp32_losses, precision):
    losses = train_steps(precision)
    assert fp32_losses[-1] < 0.6 * fp32_losses[0]
    assert losses[0] == pytest.approx(fp32_losses[0], rel=1e-2)  # same start, rounding aside
    # the same descent: every step within 5% of the fp32 run's loss drop so far
    drop = fp32_losses[0] - fp32_losses
    assert np.all(np.abs(losses - fp32_losses) <= 0.05 * np.maximum(drop, drop[-1] / STEPS) + 1e-3), \
        np.round(np.c_[fp32_losses, losses], 4)
    assert not np.array_equal(losses, fp32_losses)  # and the tensor cores really ran


def test_devices_carry_their_precision():
    assert get_device("emu").precision == "fp32"  # the emulator checks against the reference
    assert get_device("emu", precision="bf16").kernels.precision == "bf16"
    assert get_device("cpu").precision == "fp32"


@pytest.mark.parametrize("device, precision, message", [
    ("emu", "fp16", "unknown precision 'fp16': choose one of fp32, tf32, bf16"),
    ("cpu", "tf32", "--precision tf32 changes only the CUDA kernels (--device cuda or emu); "
                    "the CPU's NumPy backend computes in fp32"),
])
def test_bad_precision_is_a_one_line_device_error(device, precision, message):
    with pytest.raises(DeviceError) as error:
        get_device(device, precision=precision)
    assert str(error.value) == message


def test_train_config_keeps_the_precision():
    config = TrainConfig.from_spec(get_spec("cnn4"), device="emu", precision="bf16")
    assert config.precision == "bf16" and TrainConfig.from_dict(config.to_dict()).precision == "bf16"
    assert TrainConfig.from_spec(get_spec("cnn4")).precision == "auto"
