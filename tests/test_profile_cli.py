"""`minicnn profile` as a user runs it: the tables, the CSV, one kernel's sites, one-line errors."""
import csv
import io
import subprocess
import sys

import pytest

from minicnn.backends import cuda_status
from minicnn.profile.report import render_csv, render_kernel
from minicnn.profile.step import profile_step


def run(*args):
    return subprocess.run([sys.executable, "-m", "minicnn.cli", "profile", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args, message", [
    (("--arch", "nope"), "unknown architecture 'nope'"),
    (("--arch", "cnn4_raw", "--gpu", "v100"), "unknown GPU 'v100': choose one of h100, h200, a100"),
    (("--arch", "cnn4_raw", "--kernel", "conv3d"), "unknown kernel 'conv3d'; kernels: adam_update"),
    (("--arch", "cnn4_raw", "--batch", "0"), "--batch must be an int in [1, 65536], got 0"),
    (("--arch", "cnn4_raw", "--batch", "100000"), "--batch must be an int in [1, 65536]"),
    (("--arch", "cnn4_raw", "--blocks", "-3"), "--blocks must be sample, all or a positive number"),
    (("--arch", "cnn4_raw", "--device", "cpu"), "--device must be emu or cuda"),
    (("--arch", "cnn4_raw", "--precision", "fp16"), "unknown precision 'fp16': choose one of fp32, tf32, bf16"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(cuda_status()[0], reason="a GPU is usable here")
def test_device_cuda_without_a_gpu_is_a_one_line_error():
    result = run("--arch", "cnn4_raw", "--device", "cuda")
    assert result.returncode == 1 and "--device cuda needs a usable GPU" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_profile_of_a_small_network_names_what_to_fix():
    result = run("--arch", "cnn4_raw", "--batch", "2", "--blocks", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "per kernel family" in out and "per launch" in out and "what to fix first:" in out
    assert "launches per step:" in out and "img/s" in out
    assert "one training step (forward, loss, backward, adam)" in out  # named from its kernel
    family_rows = out.split("per kernel family")[1].split("per launch")[0]
    assert "conv2d_relu_forward" in family_rows and "adam_update" in family_rows


def test_csv_has_a_row_per_launch_and_kernel_shows_access_sites():
    profile = profile_step("cnn4_raw", batch=2, blocks=1)  # what the two flags print, in-process
    rows = list(csv.DictReader(io.StringIO(render_csv(profile))))
    assert [int(r["#"]) for r in rows] == list(range(len(profile.launches)))
    # its 32-filter convs run the 32 x 128 SIMT tile (kernel_facts.best_tile), ReLU fused
    kernels = {r["kernel"] for r in rows}
    assert {"conv2d_relu_forward<float, SimtTile<32, 128, 256>>", "adam_update_advance_multi<float>"} <= kernels
    assert all(0 < float(r["coalescing_%"]) <= 100 for r in rows)
    sites = render_kernel(profile, "conv2d_relu_forward")
    assert "access sites" in sites and "gemm.cu:" in sites and "conv.cu:" in sites
    with pytest.raises(ValueError, match="no kernel named 'bn_eval' in this step"):
        render_kernel(profile, "bn_eval")
