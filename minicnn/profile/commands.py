"""`minicnn profile`: where the time of a training step would go on a GPU, and why.

    minicnn profile --arch vgg_like --batch 512                 # emulator counters, H100 estimate
    minicnn profile --arch vgg_like --gpu a100 --csv > launches.csv
    minicnn profile --arch vgg_like --kernel conv2d_backward_data   # its access sites, worst first
    minicnn profile --arch vgg_like --precision tf32           # the tensor-core (v3) kernels
    minicnn profile --arch vgg_like --device cuda               # estimate beside CUDA-event timings
"""
from __future__ import annotations

from typing import Optional

import typer


def known_kernel_families() -> set[str]:
    from minicnn.backends.cuda_launch import KERNELS
    return {expression.split("<")[0] for names in KERNELS.values() for expression in names}


def _parse_blocks(blocks: str):
    if blocks in ("sample", "all"):
        return blocks
    if blocks.isdigit() and int(blocks) > 0:
        return int(blocks)
    raise ValueError(f"--blocks must be sample, all or a positive number, got {blocks!r}")


def profile_command(
    arch: str = typer.Option(..., help="Network name or report id (see `minicnn models`)."),
    batch: int = typer.Option(512, help="Batch size of the profiled step."),
    device: str = typer.Option("emu", help="emu (counters in the CPU emulator) or cuda (also time on the GPU)."),
    gpu: str = typer.Option("h100", help="GPU to estimate for: h100, h200 or a100."),
    precision: str = typer.Option("fp32", help="fp32 (SIMT kernels), tf32 or bf16 (tensor-core v3 kernels)."),
    csv: bool = typer.Option(False, "--csv", help="Print the per-launch table as CSV instead."),
    kernel: Optional[str] = typer.Option(None, help="One kernel (e.g. conv2d_forward) with its access sites."),
    blocks: str = typer.Option("sample", help="Blocks counted per launch: sample (first, middle, last), "
                                              "all, or a number spread over the grid."),
):
    """Record every launch of one training step and estimate its time on a GPU.

    Counters come from the CPU emulator (coalescing, bank conflicts), registers and the main
    loop's instruction mix from nvcc; the model is in minicnn/profile/estimate.py.
    """
    from minicnn.profile.gpus import get_gpu
    from minicnn.profile.report import render_csv, render_kernel, render_text
    from minicnn.profile.step import check_batch, profile_step

    from minicnn.backends.precision import check_precision

    get_gpu(gpu)
    check_batch(batch)
    check_precision(precision)
    sampling = _parse_blocks(blocks)
    if kernel is not None and kernel.split("<")[0] not in known_kernel_families():
        raise ValueError(f"unknown kernel {kernel!r}; kernels: {', '.join(sorted(known_kernel_families()))}")
    profile = profile_step(arch, batch, device=device, gpu=gpu, blocks=sampling, precision=precision)
    if kernel is not None:
        typer.echo(render_kernel(profile, kernel))
    elif csv:
        typer.echo(render_csv(profile), nl=False)
    else:
        typer.echo(render_text(profile))


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)
