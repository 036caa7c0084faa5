"""Training speed on the CPU: minicnn's NumPy backend against PyTorch CPU on the same network.

    python benchmarks/cpu_train.py                        # vgg_like b512, vgg8_bn b32, resnet20 b128
    python benchmarks/cpu_train.py --arch vgg_like --steps 3 --rounds 3 --threads 2
    python benchmarks/cpu_train.py --arch resnet20 --batch 64 --no-breakdown
    python benchmarks/cpu_train.py --arch vgg_like --baseline ../main   # before/after a change

Each framework trains in its own worker process (so each has its own peak RSS), with the same
network (benchmarks/torch_twin.py copies minicnn's layers and initial weights), the same
optimizer and recipe, the same batch and the same random images, and the same number of BLAS /
intra-op threads. After one warm-up step per worker, the parent alternates timed rounds of
--steps steps between the workers (the order changes every round), so a busy machine slows
every side alike. It prints img/s for each, the ratio minicnn / PyTorch, and each worker's
peak RSS. CPU time (all threads of a worker) is printed beside wall time: on a machine shared
with other jobs it moves less than wall time, but it also counts BLAS/OpenMP threads spinning
while they wait. Then one minicnn step broken down by kernel (every `device.kernels.*` call
timed; the rest is autograd and array glue) beside torch.profiler's table for one PyTorch step.
--baseline DIR adds a third worker running another minicnn checkout: before and after a change
in one run.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time

DEFAULT_BATCH = {"vgg_like": 512, "vgg8_bn": 32, "resnet20": 128}


# --------------------------------------------------------------------------- workers

def _data(n, batch_count, batch):
    """The same random images and labels in both workers: (images (N, 3, 32, 32), labels (N,))."""
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.random((batch_count * batch, 3, 32, 32), dtype=np.float32)
    return images, rng.integers(0, n, batch_count * batch)


class KernelTimer:
    """Stands in for a device's kernel set: each call goes to the real kernel and is timed."""

    def __init__(self, kernels):
        self.kernels, self.seconds, self.calls = kernels, {}, {}

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return kernel(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed


def _minicnn_trainer(arch, batch):
    """(step(images, labels) -> loss, breakdown() -> text) for minicnn on the CPU."""
    import minicnn as mc
    from minicnn import functional as F
    from minicnn.backends import Device, numpy_ref
    from minicnn.models import get_spec
    from minicnn.train.loop import build_optimizer

    mc.manual_seed(0)
    spec = get_spec(arch)
    model = spec.build(10).to("cpu")
    optimizer = build_optimizer(spec.recipe, model.parameters())
    device = model.parameters()[0].device

    def step(images, labels):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(mc.tensor(images, device=device)), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    def breakdown(images, labels):
        nonlocal device
        timer = KernelTimer(numpy_ref)
        device = Device("cpu", numpy_ref.np, timer)
        model.to(device)
        start = time.perf_counter()
        step(images, labels)
        total = time.perf_counter() - start
        lines = [f"{'kernel':<28} {'calls':>5} {'ms':>9} {'share':>6}"]
        for name, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
            lines.append(f"{name:<28} {timer.calls[name]:5d} {seconds * 1e3:9.1f} {seconds / total:6.1%}")
        rest = total - sum(timer.seconds.values())
        lines.append(f"{'(autograd, glue, rest)':<28} {'':>5} {rest * 1e3:9.1f} {rest / total:6.1%}")
        lines.append(f"{'one step':<28} {'':>5} {total * 1e3:9.1f}")
        return "\n".join(lines)

    return step, breakdown


def _torch_trainer(arch, batch, threads):
    import minicnn as mc
    import torch
    from minicnn.models import get_spec
    from torch_twin import torch_twin

    torch.set_num_threads(threads)
    mc.manual_seed(0)
    spec = get_spec(arch)
    model = torch_twin(spec.build(10)).train()
    r = spec.recipe
    if r.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), r.lr, r.betas, r.eps, r.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), r.lr, r.momentum, weight_decay=r.weight_decay,
                                    nesterov=r.nesterov)

    def step(images, labels):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
        loss.backward()
        optimizer.step()
        return loss.item()

    def breakdown(images, labels):
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(images, labels)
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)

    return step, breakdown


def serve(framework, source, arch, batch, batch_count, threads, connection):
    """A worker: build the trainer, warm up, then answer ('run', steps) / 'breakdown' / 'stop'.

    source: a minicnn checkout to import instead of the one on the path (None: the usual one).
    """
    if source:
        sys.path.insert(0, source)
    images, labels = _data(10, batch_count, batch)
    if framework.startswith("minicnn"):
        step, breakdown = _minicnn_trainer(arch, batch)
    else:
        step, breakdown = _torch_trainer(arch, batch, threads)
    batches = [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]
    step(*batches[0])  # warm-up: first-touch allocations, BLAS thread start
    connection.send("ready")
    losses = []
    while True:
        message = connection.recv()
        if message == "stop":
            return
        if message == "breakdown":
            connection.send(breakdown(*batches[0]))
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        for _, (x, y) in zip(range(message[1]), batches * message[1]):
            losses.append(step(x, y))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        connection.send((time.perf_counter() - start, time.process_time() - cpu_start, peak_mib, losses[-1]))


# --------------------------------------------------------------------------- parent

def _set_threads(threads):
    """BLAS / OpenMP thread counts for the workers: read once, when a worker loads its libraries."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def compare(arch, batch, steps, rounds, threads, show_breakdown, baseline=None):
    """Run the workers side by side and print the table; baseline: another minicnn checkout
    to time as a third worker (the code before a change), named 'minicnn@base'."""
    context = multiprocessing.get_context("spawn")
    workers = {}
    sources = {"minicnn": None, "pytorch": None}
    if baseline:
        sources["minicnn@base"] = baseline
    for framework, source in sources.items():
        parent_end, child_end = context.Pipe()
        process = context.Process(target=serve, args=(framework, source, arch, batch, steps, threads, child_end),
                                  daemon=True)
        process.start()
        workers[framework] = (process, parent_end)
    for _, connection in workers.values():
        assert connection.recv() == "ready"
    seconds = {name: 0.0 for name in workers}
    cpu_seconds = dict(seconds)
    peak, loss = {}, {}
    for round_index in range(rounds):
        names = list(workers)  # every round starts with the next worker, and reverses the order
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        order = order if round_index % 2 == 0 else order[::-1]
        for name in order:
            workers[name][1].send(("run", steps))
            elapsed, cpu, peak[name], loss[name] = workers[name][1].recv()
            seconds[name] += elapsed
            cpu_seconds[name] += cpu
    images = rounds * steps * batch
    rate = {name: images / seconds[name] for name in workers}
    cpu_rate = {name: images / cpu_seconds[name] for name in workers}
    print(f"{arch} batch {batch}, {threads} threads, {rounds} rounds x {steps} steps each:")
    for name in workers:
        print(f"  {name:<12} {rate[name]:8.1f} img/s   {cpu_rate[name]:8.1f} img per CPU-s   "
              f"peak RSS {peak[name]:7.0f} MiB   last loss {loss[name]:.4f}")
    print(f"  ratio minicnn / pytorch: {rate['minicnn'] / rate['pytorch']:.2f} (wall clock), "
          f"{cpu_rate['minicnn'] / cpu_rate['pytorch']:.2f} (CPU time)")
    if baseline:
        print(f"  ratio minicnn@base / pytorch: {rate['minicnn@base'] / rate['pytorch']:.2f} (wall clock), "
              f"{cpu_rate['minicnn@base'] / cpu_rate['pytorch']:.2f} (CPU time)")
    if show_breakdown:
        for name in ("minicnn", "pytorch"):
            connection = workers[name][1]
            connection.send("breakdown")
            print(f"\n  one {name} step:\n{connection.recv()}")
    for process, connection in workers.values():
        connection.send("stop")
        process.join()
    return rate["minicnn"] / rate["pytorch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(DEFAULT_BATCH) + ["all"], default="all")
    parser.add_argument("--batch", type=int, help="default: vgg_like 512, vgg8_bn 32, resnet20 128")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round (default 1)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS / torch threads")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-op tables")
    parser.add_argument("--baseline", help="another minicnn checkout (e.g. a git worktree of main) "
                                           "to time as a third worker")
    args = parser.parse_args()
    _set_threads(args.threads)
    arches = sorted(DEFAULT_BATCH) if args.arch == "all" else [args.arch]
    for arch in arches:
        compare(arch, args.batch or DEFAULT_BATCH[arch], args.steps, args.rounds, args.threads,
                not args.no_breakdown, args.baseline)
        print()


if __name__ == "__main__":
    main()
