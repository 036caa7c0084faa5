"""Everything that needs a GPU, in one run, written to one markdown report.

    python benchmarks/gpu_check.py                  # on a GPU machine: gpu_check.md, under 8 minutes
    python benchmarks/gpu_check.py --dry-run        # no GPU: the same plumbing on the CPU, small
    python benchmarks/gpu_check.py --out report.md --budget 400

Checks, in order (each a subprocess with its own time limit, all within --budget seconds):
  pytest -m cuda; minicnn gradcheck --device cuda; compute-sanitizer memcheck and racecheck on
  the conv gradcheck; benchmarks/kernels.py (ours vs cuBLAS / cuDNN per vgg_like layer);
  minicnn profile --device cuda (vgg_like, batch 512: CUDA-event times beside the emulator's
  estimate); benchmarks/throughput.py (step time and img/s of vgg_like and vgg8_bn at batch
  512 and 32, minicnn with CUDA graphs and without, against PyTorch eager, TF32 default and off,
  alternating runs).
A check whose tool is missing (no GPU, no compute-sanitizer, no PyTorch) is one skipped line;
a failing check does not stop the others. --dry-run runs each check's small CPU variant
(the same scripts, --device cpu / emu, tiny shapes) so the script itself is tested without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MINICNN = [PYTHON, "-m", "minicnn.cli"]
TAIL_LINES = 40


@dataclass(frozen=True)
class Check:
    title: str
    command: list          # the GPU run
    dry_command: list      # its CPU plumbing run
    timeout: int           # seconds
    needs: tuple = ()      # "gpu", "exe:NAME", "py:MODULE"
    keep: str = "last"     # lines the report keeps: the "last" one, or "all" (its last TAIL_LINES)
    headline: str = ""     # the summary column shows the last line containing this (default: last line)


CHECKS = [
    Check("pytest -m cuda", [PYTHON, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
          [PYTHON, "-m", "pytest", "-q", "-m", "cuda", "--collect-only", "-p", "no:cacheprovider"], 150,
          needs=("gpu",)),
    Check("minicnn gradcheck --device cuda", [*MINICNN, "gradcheck", "--device", "cuda"],
          [*MINICNN, "gradcheck", "--device", "cpu", "--op", "conv2d"], 90, needs=("gpu",)),
    Check("compute-sanitizer memcheck (conv2d gradcheck)",
          ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "1", *MINICNN, "gradcheck",
           "--device", "cuda", "--op", "conv2d"],
          [*MINICNN, "gradcheck", "--device", "emu", "--op", "max_pool2d"], 90,
          needs=("gpu", "exe:compute-sanitizer")),
    Check("compute-sanitizer racecheck (conv2d gradcheck)",
          ["compute-sanitizer", "--tool", "racecheck", "--error-exitcode", "1", *MINICNN, "gradcheck",
           "--device", "cuda", "--op", "conv2d"],
          [*MINICNN, "gradcheck", "--device", "emu", "--op", "relu"], 120,
          needs=("gpu", "exe:compute-sanitizer")),
    Check("benchmarks/kernels.py (ours vs cuBLAS / cuDNN)",
          [PYTHON, "benchmarks/kernels.py", "--model", "vgg_like", "--repeats", "5"],
          [PYTHON, "benchmarks/kernels.py", "--help"], 120, needs=("gpu",), keep="all"),
    Check("minicnn profile --device cuda (vgg_like, batch 512)",
          [*MINICNN, "profile", "--arch", "vgg_like", "--batch", "512", "--device", "cuda"],
          [*MINICNN, "profile", "--arch", "cnn4_raw", "--batch", "2", "--blocks", "1"], 200,
          needs=("gpu",), keep="all", headline="estimated step time"),
    Check("training throughput vs PyTorch eager (graphs on and off)",
          [PYTHON, "benchmarks/throughput.py", "--batch", "512", "32"],
          [PYTHON, "benchmarks/throughput.py", "--device", "cpu", "--arch", "cnn4_raw", "--batch", "4",
           "--steps", "1", "--rounds", "1"], 180, needs=("gpu", "py:torch"), keep="all"),
]


@dataclass
class Result:
    title: str
    status: str         # "ok", "failed (exit 2)", "timed out after 90 s", "skipped: ..."
    seconds: float
    summary: list       # lines for the report
    command: str = ""
    headline: str = ""  # the table's summary cell


def missing(needs: tuple, dry: bool) -> str | None:
    """Why a check cannot run here (one line), or None."""
    for need in needs:
        kind, _, name = need.partition(":")
        if kind == "gpu" and not dry:
            from minicnn.backends import cuda_status
            usable, reason = cuda_status()
            if not usable:
                return f"no usable GPU ({reason})"
        elif kind == "exe" and not dry and shutil.which(name) is None:
            return f"{name} not found on PATH"
        elif kind == "py" and importlib.util.find_spec(name) is None:
            return f"Python module {name} not installed"
    return None


def run_check(check: Check, dry: bool, seconds_left: float) -> Result:
    reason = missing(check.needs, dry)
    if reason:
        return Result(check.title, f"skipped: {reason}", 0.0, [])
    timeout = min(check.timeout, seconds_left)
    if timeout < 10:
        return Result(check.title, "skipped: the time budget is spent", 0.0, [])
    command = check.dry_command if dry else check.command
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        return Result(check.title, f"timed out after {timeout:.0f} s", time.perf_counter() - start,
                      output.splitlines()[-TAIL_LINES:], " ".join(command))
    except OSError as error:
        return Result(check.title, f"skipped: {error.strerror}: {command[0]}", 0.0, [])
    lines = (done.stdout + done.stderr).strip().splitlines()
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    kept = lines[-TAIL_LINES:] if check.keep == "all" or done.returncode else lines[-1:]
    headline = next((line for line in reversed(lines) if check.headline in line), "")
    return Result(check.title, status, time.perf_counter() - start, kept, " ".join(command), headline.strip())


def environment_lines(dry: bool) -> list[str]:
    from minicnn.backends import cuda_status
    usable, reason = cuda_status()
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- host: {platform.node()}, {platform.machine()}, Python {platform.python_version()}",
             f"- CUDA: {reason}"]
    if usable and shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        lines += [f"- {line}" for line in smi.stdout.strip().splitlines()]
    if dry:
        lines.append("- mode: --dry-run (each check's CPU variant: the script's plumbing, not GPU results)")
    return lines


def render(results: list[Result], dry: bool, total: float) -> str:
    lines = ["# minicnn GPU check", "", *environment_lines(dry), f"- total time: {total:.0f} s", "",
             "| check | status | seconds | summary |", "|---|---|---:|---|"]
    for r in results:
        lines.append(f"| {r.title} | {r.status} | {r.seconds:.0f} | {r.headline.replace('|', '/')} |")
    for r in results:
        if len(r.summary) > 1 or (r.summary and r.status != "ok"):
            lines += ["", f"## {r.title}", "", f"`{r.command}`", "", "```", *r.summary, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run the CPU variants (no GPU needed)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--budget", type=float, default=450, help="seconds for all checks together")
    parser.add_argument("--only", nargs="+", type=int, help="run only these checks (1-based)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = []
    for number, check in enumerate(CHECKS, 1):
        if args.only and number not in args.only:
            continue
        result = run_check(check, args.dry_run, args.budget - (time.perf_counter() - start))
        results.append(result)
        print(f"[{number}/{len(CHECKS)}] {result.title}: {result.status} ({result.seconds:.0f} s)", flush=True)
    args.out.write_text(render(results, args.dry_run, time.perf_counter() - start))
    print(f"report: {args.out}")
    return 1 if any(r.status.startswith(("failed", "timed out")) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
