"""vgg8_bn after one epoch, over several seeds: how far eval-mode accuracy trails, and why.

    python benchmarks/bn_seeds.py                             # 3 seeds, the first 10,000 training images
    python benchmarks/bn_seeds.py --images 50000 --seeds 5    # full epochs (~10 min each in minicnn on 2 cores)
    python benchmarks/bn_seeds.py --seeds 0,7,9 --threads 2 --bn-batches 200

Each seed trains report C's network with its recipe (Adam 1e-3, batch 32, inputs /255, rotation
15 + shift 0.1 + flip) twice, on the very same batches from the very same initial weights: in
minicnn (Keras-convention BN: momentum 0.99, the plain batch variance kept) and in its PyTorch
twin (tests/torch_twin.py), float32 both. The twin keeps the running variance both ways: Keras'
rule and PyTorch's (torch.nn.BatchNorm2d with momentum 0.01, eps 1e-3 keeps the unbiased batch
variance). Training never reads the running statistics, so one twin run serves both rows, and
minicnn and the twin learn the same function up to float32 rounding (tests/test_torch_parity.py
shows the steps equal in float64); how far rounding differences grow in an epoch is seed noise.
Every trained network is scored on the test set three ways: eval mode with its running
statistics, eval mode with statistics recomputed over --bn-batches unaugmented training batches
(minicnn.nn.bn_stats, the `--bn-stats recompute` option), and with BN on the statistics of each
test batch of 1,000 (what the weights can do once the statistics fit them). The twin is scored
in eval mode only, once per convention (scoring is as slow as training on a shared 2-core
machine; add --score-twin for its other two figures). Scoring runs in PyTorch on the twin of the
scored weights; the table prints the mean and the standard deviation over seeds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the twin lives beside its test

SYSTEMS = ("minicnn", "twin, Keras BN", "twin, torch BN")
FIGURES = ("eval", "recompute", "batch")
TEST_BATCH = 1000


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="train on the first N training images")
    parser.add_argument("--seeds", default="3", help="a count (3: seeds 0, 1, 2) or a list (0,7,9)")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and for PyTorch")
    parser.add_argument("--bn-batches", type=int, default=100, help="training batches the recompute measures")
    parser.add_argument("--test-images", type=int, default=10_000, help="score on the first N test images")
    parser.add_argument("--data", default=None, help="CIFAR-10 folder (default: $MINICNN_DATA or the cache)")
    parser.add_argument("--score-twin", action="store_true", help="also score the twin with recomputed and "
                        "batch statistics")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")] if "," in args.seeds else list(range(int(args.seeds)))
    return args


def train_minicnn(model, batches, recipe):
    from minicnn import functional as F
    from minicnn.autograd import tensor
    from minicnn.train.loop import build_optimizer
    opt = build_optimizer(recipe, model.parameters())
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_twin(twin, batches, recipe):
    import torch
    opt = torch.optim.Adam(twin.parameters(), recipe.lr, recipe.betas, recipe.eps, recipe.weight_decay)
    twin.train()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(twin, test, training_mode):
    """Test accuracy of a float32 twin; training_mode: BN on each test batch's statistics."""
    import torch
    twin.train(training_mode)
    correct = 0
    with torch.no_grad():
        for x, y in test:
            correct += int((twin(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return correct / sum(len(y) for _, y in test)


def score(model, test, stats_batches, bn_batches, eval_only=False):
    """{figure: accuracy} of a trained minicnn model (its running statistics are left as they were)."""
    import torch
    from minicnn.nn.bn_stats import recomputed_bn_stats
    from torch_twin import torch_twin
    figures = {"eval": accuracy(torch_twin(model, dtype=torch.float32), test, False)}
    if eval_only:
        return figures
    with recomputed_bn_stats(model, stats_batches, bn_batches):
        figures["recompute"] = accuracy(torch_twin(model, dtype=torch.float32), test, False)
    figures["batch"] = accuracy(torch_twin(model, dtype=torch.float32), test, True)
    return figures


def as_minicnn(twin, spec, convention):
    """A minicnn model holding a trained twin's weights and running statistics of `convention`."""
    model = spec.build(10)
    state = {k: v.detach().numpy() for k, v in twin.state_dict().items() if "unbiased" not in k}
    if convention == "torch":
        state.update({k.replace("_unbiased", ""): v.detach().numpy()
                      for k, v in twin.state_dict().items() if "unbiased" in k})
    model.load_state_dict(state)
    for _, layer in model.named_modules():
        if layer.kind == "bn":
            layer.convention = convention  # a recompute keeps this row's variance convention
    return model


def run_seed(seed, spec, splits, args):
    import torch
    from minicnn.data import BatchLoader, augment_preset
    from minicnn.random import manual_seed
    from minicnn.train.bn_stats import statistics_batches
    from torch_twin import torch_twin
    recipe = spec.recipe
    manual_seed(seed)
    model = spec.build(10)
    twin = torch_twin(model, "keras", torch.float32)
    loader = BatchLoader(splits.train_x, splits.train_y, recipe.batch_size, normalizer=splits.normalizer,
                         augment=augment_preset(recipe.augmentation), shuffle=True, seed=seed, limit=args.images)
    batches = list(loader)  # the same augmented batches for both
    test = list(BatchLoader(splits.test_x, splits.test_y, TEST_BATCH, normalizer=splits.normalizer,
                            limit=args.test_images))
    stats = statistics_batches(splits, recipe.batch_size, seed=seed, limit=args.images)
    seconds = {}
    start = time.perf_counter()
    train_minicnn(model, batches, recipe)
    seconds["minicnn"] = time.perf_counter() - start
    start = time.perf_counter()
    train_twin(twin, batches, recipe)
    seconds["twin"] = time.perf_counter() - start
    results = {"minicnn": score(model, test, stats, args.bn_batches)}
    for name, convention in (("twin, Keras BN", "keras"), ("twin, torch BN", "torch")):
        results[name] = score(as_minicnn(twin, spec, convention), test, stats, args.bn_batches,
                              eval_only=not args.score_twin or convention == "torch")
    for name in SYSTEMS:
        row = ", ".join(f"{figure} {results[name][figure]:.2%}" for figure in FIGURES if figure in results[name])
        print(f"seed {seed}, {name}: {row}", flush=True)
    print(f"seed {seed}: training {seconds['minicnn']:.0f} s minicnn, {seconds['twin']:.0f} s twin", flush=True)
    return results


def mean_spread(values):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {spread:.2%}"


def print_table(all_results, args, recipe):
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nvgg8_bn, one epoch over the first {args.images:,} training images, seeds {seeds} "
          f"(mean ± standard deviation); test set: first {args.test_images:,} images")
    print(f"| system | eval mode (running statistics) | recomputed ({args.bn_batches} batches of "
          f"{recipe.batch_size}) | batch statistics (test batches of {TEST_BATCH:,}) |")
    print("|---|---|---|---|")
    for name in SYSTEMS:
        cells = [mean_spread([r[name][figure] for r in all_results]) if figure in all_results[0][name] else "–"
                 for figure in FIGURES]
        print(f"| {name} | " + " | ".join(cells) + " |")

    def gap(name, first, second):
        return statistics.mean(r[name][first] - r[name][second] for r in all_results)

    lag = gap("minicnn", "recompute", "eval")
    convention = statistics.mean(r["twin, torch BN"]["eval"] - r["twin, Keras BN"]["eval"] for r in all_results)
    print(f"\nmomentum lag (minicnn, recomputed - eval mode): {lag:+.2%}; "
          f"recomputed vs batch statistics: {gap('minicnn', 'recompute', 'batch'):+.2%}")
    print(f"variance convention (twin: torch BN - Keras BN, eval mode, same weights): {convention:+.2%}")


def main():
    args = parse_args()
    import torch
    from threadpoolctl import threadpool_limits
    from minicnn.data import prepare_data
    from minicnn.models import get_spec
    from minicnn.train.config import TrainConfig
    torch.set_num_threads(args.threads)
    spec = get_spec("vgg8_bn")
    splits = prepare_data(TrainConfig.from_spec(spec).data_recipe(), args.data)
    start = time.perf_counter()
    with threadpool_limits(args.threads):
        all_results = [run_seed(seed, spec, splits, args) for seed in args.seeds]
    print_table(all_results, args, spec.recipe)
    print(f"\nwall time {time.perf_counter() - start:.0f} s, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
