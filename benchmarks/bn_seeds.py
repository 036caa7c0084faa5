"""vgg8_bn after one epoch, over several seeds: how far eval-mode accuracy trails, and why.

    python benchmarks/bn_seeds.py                             # 3 seeds, the first 10,000 training images
    python benchmarks/bn_seeds.py --images 50000 --seeds 5    # full epochs (~10 min each in minicnn on 2 cores)
    python benchmarks/bn_seeds.py --seeds 0,7,9 --threads 2 --bn-batches 200

Each seed trains report C's network with its recipe (Adam 1e-3, batch 32, inputs /255, rotation
15 + shift 0.1 + flip) in minicnn (Keras-convention BN: momentum 0.99, the plain batch variance
kept) and, for the first --twin-seeds seeds, in its PyTorch twin too (tests/torch_twin.py), on
the very same batches from the very same initial weights, float32 both. Both also keep the
running variance by PyTorch's rule beside Keras' (torch.nn.BatchNorm2d with momentum 0.01, eps
1e-3 keeps the unbiased batch variance): training never reads the running statistics, so one run
serves both rows. minicnn and the twin learn the same function up to float32 rounding
(tests/test_torch_parity.py shows the steps equal in float64); how far rounding differences grow
in an epoch is seed noise.
Every trained network is scored on the test set three ways: eval mode with its running
statistics, eval mode with statistics recomputed over --bn-batches unaugmented training batches
(minicnn.train.bn_stats, the `--bn-stats recompute` option), and with BN on the statistics of each
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

SYSTEMS = ("minicnn", "minicnn, PyTorch's variance rule", "twin, Keras BN", "twin, torch BN")
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
    parser.add_argument("--twin-seeds", type=int, default=None, help="train the twin for the first N seeds "
                        "only (default: all)")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")] if "," in args.seeds else list(range(int(args.seeds)))
    return args


def train_minicnn(model, batches, recipe) -> dict:
    """Train on batches; returns {BN layer: the running variance PyTorch's rule would hold}."""
    from minicnn import functional as F
    from minicnn.autograd import tensor
    from minicnn.train.bn_stats import batch_norm_layers
    from minicnn.train.loop import build_optimizer
    opt = build_optimizer(recipe, model.parameters())
    unbiased = {path: layer.running_var.copy() for path, layer in batch_norm_layers(model)}

    def follow(path, layer, x):  # the same average over the unbiased batch variance
        axes = (0,) + tuple(range(2, x.ndim))
        unbiased[path] *= 1 - layer.momentum
        unbiased[path] += layer.momentum * x.var(axis=axes, ddof=1)

    handles = [layer.register_forward_hook(lambda module, inputs, out, path=path: follow(path, module, inputs[0].data))
               for path, layer in batch_norm_layers(model)]
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for handle in handles:
        handle.remove()
    return unbiased


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
    from minicnn.train.bn_stats import recomputed_bn_stats
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
    twin = torch_twin(model, "keras", torch.float32) if args.twin_seeds is None or seed in args.seeds[:args.twin_seeds] \
        else None
    loader = BatchLoader(splits.train_x, splits.train_y, recipe.batch_size, normalizer=splits.normalizer,
                         augment=augment_preset(recipe.augmentation), shuffle=True, seed=seed, limit=args.images)
    batches = list(loader)  # the same augmented batches for both
    test = list(BatchLoader(splits.test_x, splits.test_y, TEST_BATCH, normalizer=splits.normalizer,
                            limit=args.test_images))
    stats = statistics_batches(splits, recipe.batch_size, seed=seed, limit=args.images)
    start = time.perf_counter()
    unbiased = train_minicnn(model, batches, recipe)
    timing = f"seed {seed}: training {time.perf_counter() - start:.0f} s minicnn"
    results = {"minicnn": score(model, test, stats, args.bn_batches)}
    for path, layer in model.named_modules():
        if path in unbiased:
            layer.running_var[...] = unbiased[path]
    results["minicnn, PyTorch's variance rule"] = score(model, test, stats, args.bn_batches, eval_only=True)
    if twin is not None:
        start = time.perf_counter()
        train_twin(twin, batches, recipe)
        timing += f", {time.perf_counter() - start:.0f} s twin"
        for name, convention in (("twin, Keras BN", "keras"), ("twin, torch BN", "torch")):
            results[name] = score(as_minicnn(twin, spec, convention), test, stats, args.bn_batches,
                                  eval_only=not args.score_twin or convention == "torch")
    for name in results:
        row = ", ".join(f"{figure} {results[name][figure]:.2%}" for figure in FIGURES if figure in results[name])
        print(f"seed {seed}, {name}: {row}", flush=True)
    print(timing, flush=True)
    return results


def mean_spread(values):
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.2%}" if len(values) > 1 else " (one seed)"
    return f"{statistics.mean(values):.2%}{spread}"


def print_table(all_results, args, recipe):
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nvgg8_bn, one epoch over the first {args.images:,} training images, seeds {seeds} "
          f"(mean ± standard deviation); test set: first {args.test_images:,} images")
    print(f"| system | eval mode (running statistics) | recomputed ({args.bn_batches} batches of "
          f"{recipe.batch_size}) | batch statistics (test batches of {TEST_BATCH:,}) |")
    print("|---|---|---|---|")
    for name in SYSTEMS:
        cells = [mean_spread([r[name][figure] for r in all_results if figure in r.get(name, {})]) for figure in FIGURES]
        print(f"| {name} | " + " | ".join(cells) + " |")

    def gap(first, second):
        """Mean over seeds of first - second, each (row, figure)."""
        pairs = [r[first[0]][first[1]] - r[second[0]][second[1]] for r in all_results if first[0] in r]
        return f"{statistics.mean(pairs):+.2%}" if pairs else "–"

    print(f"\nmomentum lag (minicnn, recomputed - eval mode): {gap(('minicnn', 'recompute'), ('minicnn', 'eval'))}; "
          f"recomputed - batch statistics: {gap(('minicnn', 'recompute'), ('minicnn', 'batch'))}")
    rule = ("minicnn, PyTorch's variance rule", "eval")
    print(f"variance convention, eval mode, same weights: minicnn {gap(rule, ('minicnn', 'eval'))}, "
          f"twin {gap(('twin, torch BN', 'eval'), ('twin, Keras BN', 'eval'))} (PyTorch's rule - Keras')")


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
