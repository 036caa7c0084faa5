"""The training loop: epochs of train steps, validation, checkpoints, and exact resume.

One step is the textbook one: model.train(); forward; cross-entropy; backward; optimizer.step().
Per-step loss and correct counts stay on the device in two small arrays; the host reads them
every LOG_EVERY steps (progress bar, NaN check) and once at the end of the epoch.

What makes a resumed run equal an uninterrupted one, bit for bit: the checkpoint holds the
weights, BN running statistics and dropout (seed, step) (all in model.state_dict()), the
optimizer's moments and step count, and the epoch; the data loader draws epoch e's shuffle and
augmentation from a generator seeded by (seed, e), and the learning rate is a function of the
epoch. `last` is written before epoch 1 and after every epoch, so a kill at any moment loses at
most the epoch in progress.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minicnn import optim
from minicnn.backends import get_device
from minicnn.data import prepare_data, split_loaders
from minicnn.progress import hide_bar
from minicnn.random import generator, manual_seed
from minicnn.train.bn_stats import HELD, recompute_bn_stats, recomputed_bn_stats, statistics_batches
from minicnn.train.checkpoint import load_checkpoint, newest_intact, restore, save_checkpoint, write_atomically
from minicnn.train.config import TrainConfig
from minicnn.train.errors import DivergedError, TrainError
from minicnn.train.evaluate import evaluate
from minicnn.train.finite import exploded, finite_or_none, format_loss, names_in_short, non_finite_arrays
from minicnn.train.graph_step import CupyGraphs, GraphStep
from minicnn.train.metrics import plot_curves, write_metrics_csv
from minicnn.train.prefetch import prefetch
from minicnn.train.runfolder import RunLock, claim_folder

LOG_EVERY = 20  # steps between host reads of the running loss (progress bar and NaN check)
LONG_RUN = 3600  # seconds: a run estimated to take longer gets a note saying how to shorten it
# the epoch bar counts fractions of an epoch, so it has a rate (and an ETA) within the first epoch
EPOCH_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} epochs [{elapsed}<{remaining}{postfix}]"


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict]           # metrics.csv rows
    best_epoch: int
    test_accuracy: float | None   # None when the run was interrupted
    test_loss: float | None
    tested: str                   # which checkpoint the test figure comes from: 'best' | 'last'
    epoch_tested: int             # the epoch of that checkpoint
    seconds: float                # training + validation time over all epochs (resumed ones included)
    interrupted: bool = False


def build_optimizer(recipe, params):
    if recipe.optimizer == "adam":
        return optim.Adam(params, recipe.lr, recipe.betas, recipe.eps, recipe.weight_decay)
    return optim.SGD(params, recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay)


class Trainer:
    """One run: its data, model, optimizer, progress (epoch, best, history) and folder."""

    def __init__(self, config: TrainConfig, spec, run_dir: Path, data=None, progress=True, log=tqdm.write):
        self.config, self.spec = config, spec
        self.run_dir = Path(run_dir) if run_dir is not None else None  # None: train() claims one
        self.progress, self.log = progress, log
        self.splits = prepare_data(config.data_recipe(), config.data, data)  # fails before any folder is made
        self.device = get_device(config.device, precision=config.precision)
        self.loaders = split_loaders(self.splits, config.recipe.batch_size, seed=config.seed,
                                     limit=config.limit, device=self.device)
        manual_seed(config.seed)
        self.model = spec.build(len(self.splits.classes)).to(self.device)
        self.bn_loader = statistics_batches(self.splits, config.recipe.batch_size, seed=config.seed,
                                            limit=config.limit, device=self.device)
        self.optimizer = build_optimizer(config.recipe, self.model.parameters())
        self.train_step = GraphStep(self.model, self.optimizer, self.device, self.graph_runtime())
        self.epoch, self.saved_epoch = 0, None
        self.best = {"val_acc": None, "epoch": 0}
        self.history: list[dict] = []
        self.warned_exploded = False
        self.noted_duration = False
        self.bar = None  # the epoch bar, while run() draws it

    def graph_runtime(self):
        """CUDA graphs for the training steps (minicnn/train/graph_step.py), or None: eager."""
        if self.device.name == "cuda" and self.config.graphs is not False:
            return CupyGraphs(self.device.kernels.runtime)
        if self.config.graphs:
            self.log(f"note: --graphs has no effect on {self.device.name} (CUDA graphs need a GPU); "
                     f"steps run eagerly")
        return None

    # ---- state
    def meta(self) -> dict:
        normalizer = self.splits.normalizer
        return {"epoch": self.epoch, "config": self.config.to_dict(), "best": self.best, "bn_stats": HELD,
                "history": self.history, "classes": list(self.splits.classes),
                "normalizer": {"mean": list(normalizer.mean), "std": list(normalizer.std)},
                "val_is_test": self.splits.val_is_test,
                "rng": {"minicnn.random": generator().bit_generator.state,
                        "data": {"seed": self.config.seed, "next_epoch": self.epoch}}}

    def save(self, name: str) -> None:
        save_checkpoint(self.run_dir / name, self.model, self.optimizer, self.meta())

    def load(self, checkpoint) -> None:
        restore(checkpoint, self.model, self.optimizer)
        meta = checkpoint.meta
        self.epoch = self.saved_epoch = meta["epoch"]
        self.best, self.history = meta["best"], meta["history"]
        generator().bit_generator.state = meta["rng"]["minicnn.random"]

    # ---- running
    def run(self) -> TrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob(".*.tmp"):  # half-written files of a run that was killed
            stale.unlink()
        write_atomically(self.run_dir / "config.json",
                         lambda f: f.write(json.dumps(self.config.to_dict(), indent=1).encode()))
        self.log(f"{self.spec.name} -> {self.run_dir}: {self.splits.describe(self.config.limit)}, "
                 f"device {self.device.name}")
        epochs = self.config.recipe.epochs
        self.bar = bar = tqdm(total=epochs, initial=self.epoch, desc=self.spec.name, bar_format=EPOCH_BAR,
                              disable=hide_bar(self.progress), dynamic_ncols=True)
        try:
            if self.saved_epoch is None:  # a kill during epoch 1 can still resume
                self.save("last")
                self.saved_epoch = 0
            for epoch in range(self.epoch + 1, epochs + 1):
                self.run_epoch(epoch)
                bar.n = epoch  # the steps' fractions added up to about one; make it exact
                bar.set_postfix(val_acc=f"{self.history[-1]['val_acc']:.2%}")
        except KeyboardInterrupt:
            return self.interrupted()
        finally:
            bar.close()
        return self.finish()

    def run_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        self.optimizer.lr = self.config.lr_at(epoch)
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is caught, and said, by check_finite
            train_loss, train_acc, images, train_seconds = self.train_epoch(epoch)
            val = evaluate(self.model, self.loaders["val"])
            running = val
            if self.config.bn_stats == "recompute":  # validate with both; the recomputed figure leads
                self.bn_loader.set_epoch(epoch - 1)  # the same batches after a resume
                with recomputed_bn_stats(self.model, self.bn_loader, self.config.bn_batches):
                    val = evaluate(self.model, self.loaders["val"])
        self.check_epoch(epoch, train_loss, val.loss)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val.loss,
               "val_acc": val.accuracy, "lr": self.optimizer.lr, "seconds": time.perf_counter() - start,
               "images_per_s": images / train_seconds}
        if running is not val:
            row.update(val_loss_running=running.loss, val_acc_running=running.accuracy)
        improved = self.best["val_acc"] is None or val.accuracy > self.best["val_acc"]
        self.history.append(row)
        self.epoch = epoch
        if improved:
            self.best = {"val_acc": val.accuracy, "epoch": epoch}
        self.save_epoch()
        write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        plot_curves(self.run_dir / "curves.png", self.history, self.spec.name, self.val_label)
        also = "" if running is val else f" (running BN statistics: {running.accuracy:.2%})"
        self.log(f"epoch {epoch}/{self.config.recipe.epochs}: train loss {format_loss(train_loss)} acc {train_acc:.2%} | "
                 f"{self.val_label} loss {format_loss(val.loss)} acc {val.accuracy:.2%}{also}{' *' if improved else ''} | "
                 f"lr {row['lr']:.3g} | {row['seconds']:.1f}s, {row['images_per_s']:.0f} img/s")
        self.warn_if_exploded(train_loss)

    @property
    def tested(self) -> str:
        """The checkpoint whose test accuracy the run reports, by the recipe's rule."""
        return "last" if self.config.recipe.checkpoint == "every-epoch" else "best"

    @property
    def report_id(self) -> str:
        """The network's id in its report (A13), else the report's letter."""
        return self.spec.aliases[0] if self.spec.aliases else self.spec.report

    @property
    def val_label(self) -> str:
        label = "validation (= test)" if self.splits.val_is_test else "validation"
        return label + (", recomputed BN statistics" if self.config.bn_stats == "recompute" else "")

    def save_epoch(self) -> None:
        """The finished epoch's checkpoints. `last` goes last: it is what a resume starts from, so
        whatever it names (best.npz) must already be on disk when it lands."""
        if self.best["epoch"] == self.epoch:
            self.save("best")
        rule = self.config.recipe.checkpoint
        if rule == "every-epoch" or (rule == "improvements" and self.best["epoch"] == self.epoch):
            self.save(f"epoch-{self.epoch:03d}")
        self.save("last")
        self.saved_epoch = self.epoch

    def train_epoch(self, epoch: int):
        """One pass over the training set -> (mean loss, accuracy, images, seconds)."""
        xp, loader = self.device.xp, self.loaders["train"]
        loader.set_epoch(epoch - 1)
        steps = len(loader)
        loss_sums = xp.zeros(steps, dtype=xp.float64)    # per step: loss * batch size
        correct = xp.zeros(steps, dtype=xp.int64)        # per step: right answers
        sizes = np.zeros(steps, dtype=np.int64)
        self.model.train()
        start = time.perf_counter()
        batches = tqdm(prefetch(loader, self.config.workers), total=steps, desc=f"epoch {epoch}",
                       unit="batch", leave=False, disable=hide_bar(self.progress), dynamic_ncols=True)
        checked, after_first_step = 0, None
        for step, (x, y) in enumerate(batches):
            loss, logits = self.train_step(x, y)  # arrays; replays of a CUDA graph when it can
            sizes[step] = len(y)
            loss_sums[step] = loss * len(y)
            correct[step] = (logits.argmax(axis=1) == y).sum()
            if step == 0:
                after_first_step = time.perf_counter()  # the first step also pays for warm-up (compiles, caches)
            if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                running = self.check_finite(loss_sums, checked, step + 1, epoch)
                self.bar.update((step + 1 - checked) / steps)
                if step > 0:
                    self.note_if_long((time.perf_counter() - after_first_step) / step, steps, epoch)
                checked = step + 1
                seen = sizes[:checked].sum()
                batches.set_postfix(loss=format_loss(running / seen), acc=f"{int(correct[:checked].sum()) / seen:.2%}",
                                    img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
        seconds = time.perf_counter() - start
        images = int(sizes.sum())
        return float(loss_sums.sum()) / images, int(correct.sum()) / images, images, seconds

    def check_finite(self, loss_sums, first: int, end: int, epoch: int) -> float:
        """The loss sum of steps [0, end); a NaN/inf among steps [first, end) stops the run."""
        total = float(loss_sums[:end].sum())
        if math.isfinite(total):
            return total
        window = loss_sums[first:end]
        bad = first + int(self.device.xp.argmin(self.device.xp.isfinite(window)))
        raise DivergedError(
            f"loss became {float(loss_sums[bad]):g} at epoch {epoch}, step {bad + 1} of {len(loss_sums)}; "
            f"stopped. {self.run_dir / 'last.npz'} keeps epoch {self.saved_epoch} (try a smaller --lr)")

    def note_if_long(self, seconds_per_step: float, steps: int, epoch: int) -> None:
        """Once per process, from the first measured steps: when the rest of the run will take
        more than LONG_RUN seconds, say how long and which flags shorten it."""
        if self.noted_duration:
            return
        self.noted_duration = True
        epochs_left = self.config.recipe.epochs - epoch + 1
        validation = len(self.loaders["val"]) / 3  # a forward pass is about a third of a training step
        seconds = seconds_per_step * (steps + validation) * epochs_left
        if seconds < LONG_RUN:
            return
        hours = seconds / 3600
        hours = f"{hours:.0f}" if hours >= 10 else f"{hours:.1f}"
        faster = "" if self.device.name == "cuda" else ", or train on a GPU with --device cuda"
        self.log(f"note: this run will take about {hours} hours on {self.device.name} "
                 f"({seconds_per_step:.2g} s per step, {steps} steps per epoch, {epochs_left} epochs to go); "
                 f"shorten it with --epochs N or --limit N{faster}")

    def check_epoch(self, epoch: int, train_loss: float, val_loss: float) -> None:
        """Stop before a diverged epoch is saved (so no NaN weights ever become `best`): the
        losses and every weight must be finite. The last steps' updates are seen only here."""
        bad = [f"the {what} loss ({value:g})" for what, value in (("training", train_loss), (self.val_label, val_loss))
               if not math.isfinite(value)]
        weights = non_finite_arrays({name: p.data for name, p in self.model.named_parameters()}, self.device.xp)
        if weights:
            bad.append(f"weights ({names_in_short(weights)})")
        if bad:
            raise DivergedError(
                f"{' and '.join(bad)} became NaN/inf in epoch {epoch}; stopped. {self.run_dir / 'last.npz'} "
                f"keeps epoch {self.saved_epoch} (try a smaller --lr)")

    def warn_if_exploded(self, train_loss: float) -> None:
        """One warning per run when the loss is finite but far beyond chance: it has blown up."""
        classes = len(self.splits.classes)
        if not self.warned_exploded and exploded(train_loss, classes):
            self.warned_exploded = True
            self.log(f"warning: the training loss {format_loss(train_loss)} is far above chance level "
                     f"({math.log(classes):.2f} for {classes} classes): the run has probably diverged "
                     f"(try a smaller --lr)")

    def interrupted(self) -> TrainResult:
        if self.saved_epoch != self.epoch:  # Ctrl-C came while that epoch's checkpoints were written
            self.save_epoch()
        self.log(f"interrupted: {self.run_dir / 'last.npz'} holds epoch {self.epoch} of "
                 f"{self.config.recipe.epochs}; continue with `minicnn train --resume {self.run_dir}`")
        return self.result(None, interrupted=True)

    def finish(self) -> TrainResult:
        tested = self.tested
        restore(load_checkpoint(self.run_dir / f"{tested}.npz"), self.model)
        if self.config.bn_stats == "recompute":  # training is over: the model may keep them
            self.bn_loader.set_epoch(0)
            recompute_bn_stats(self.model, self.bn_loader, self.config.bn_batches)
        test = evaluate(self.model, self.loaders["test"])
        result = self.result(test)
        summary = {"test_accuracy": test.accuracy, "test_loss": finite_or_none(test.loss), "tested": tested,
                   "bn_stats": self.config.bn_stats,
                   "epoch_tested": result.epoch_tested,
                   "reported": self.spec.reported, "reported_accuracy": self.spec.reported_accuracy,
                   "epochs": self.epoch, "seconds": result.seconds}
        text = json.dumps(summary, indent=1, allow_nan=False)  # a NaN would make it unreadable as JSON
        write_atomically(self.run_dir / "result.json", lambda f: f.write(text.encode()))
        self.log(f"test accuracy {test.accuracy:.2%} (loss {format_loss(test.loss)}), {tested} checkpoint "
                 f"(epoch {summary['epoch_tested']} of {self.epoch}) | report {self.report_id}: {self.spec.reported}")
        if self.splits.val_is_test and tested == "best":
            self.log("note: this recipe validates on the test set (as the report did), so the best epoch "
                     "was chosen by test accuracy")
        if self.config.limit:
            self.log(f"note: only the first {self.config.limit} images of each split were used (--limit)")
        return result

    def result(self, test, interrupted=False) -> TrainResult:
        return TrainResult(self.run_dir, self.config, self.history, self.best["epoch"],
                           test.accuracy if test else None, test.loss if test else None, self.tested,
                           self.best["epoch"] if self.tested == "best" else self.epoch,
                           sum(row["seconds"] for row in self.history), interrupted)


def _spec_for(config: TrainConfig, spec):
    if spec is not None:
        return spec
    from minicnn.models import get_spec
    return get_spec(config.arch)


def train(config: TrainConfig, *, out="runs", run_dir=None, spec=None, data=None, progress=True,
          log=tqdm.write) -> TrainResult:
    """Train `config` from scratch into `run_dir` (default: a new out/<arch>-<timestamp>[-n]/).

    spec: the ModelSpec to build (default: the zoo's config.arch); data: a loaded minicnn.data.Cifar
    to use instead of reading config.data (tests).
    """
    spec = _spec_for(config, spec)
    trainer = Trainer(config, spec, run_dir, data, progress, log)  # bad data fails before any folder is made
    if run_dir is None:
        trainer.run_dir = claim_folder(out, f"{config.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(trainer.run_dir, f"run folder {trainer.run_dir}"):
        return trainer.run()


def resume(run_dir, *, epochs=None, device=None, data_dir=None, workers=None, spec=None, data=None,
           progress=True, log=tqdm.write, bn_stats=None, bn_batches=None, graphs=None) -> TrainResult:
    """Continue the run in `run_dir` from its last checkpoint, optionally to a new epoch count."""
    run_dir = Path(run_dir)
    if not [path for path in run_dir.glob("*.npz") if not path.name.startswith(".")]:
        raise TrainError(f"--resume {run_dir}: not a run folder (no last.npz); "
                         f"pass a folder that `minicnn train` wrote, e.g. runs/<arch>-<time>")
    with RunLock(run_dir, f"--resume {run_dir}") as lock:
        if lock.took_over:
            log(f"note: took over the lock of {lock.took_over}, which is no longer running")
        return _resume_locked(run_dir, epochs, device, data_dir, workers, spec, data, progress, log,
                              bn_stats, bn_batches, graphs)


def _resume_locked(run_dir: Path, epochs, device, data_dir, workers, spec, data, progress, log,
                   bn_stats, bn_batches, graphs) -> TrainResult:
    checkpoint = newest_intact(run_dir, log)
    changes = {k: v for k, v in dict(epochs=epochs, device=device, data=data_dir, workers=workers,
                                     bn_stats=bn_stats, bn_batches=bn_batches,
                                     graphs=graphs).items() if v is not None}
    config = TrainConfig.from_dict(checkpoint.meta["config"]).replace(**changes)
    done = checkpoint.meta["epoch"]
    if done >= config.recipe.epochs:
        raise TrainError(f"--resume {run_dir}: already trained {done} of {config.recipe.epochs} epochs; "
                         f"pass --epochs N (N > {done}) to train further")
    trainer = Trainer(config, _spec_for(config, spec), run_dir, data, progress, log)
    trainer.load(checkpoint)
    log(f"resuming {run_dir} after epoch {done}")
    return trainer.run()
