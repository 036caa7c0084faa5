"""A training run's settings: the network's recipe (from the model zoo) plus how to run it.

The recipe supplies every default; `TrainConfig.from_spec(spec, lr=..., epochs=...)` overrides
single fields. The config is saved as JSON in the run folder and in every checkpoint, so a run
can be resumed, evaluated or reproduced from its folder alone.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minicnn.backends import DEVICE_NAMES, resolve_precision
from minicnn.data import DataRecipe
from minicnn.models import Recipe
from minicnn.train.bn_stats import DEFAULT_BN_BATCHES, check_bn_stats
from minicnn.train.errors import TrainError

OPTIMIZERS = ("adam", "sgd")
CHECKPOINT_RULES = ("best", "improvements", "every-epoch")
RUN_FIELDS = ("seed", "device", "precision", "data", "limit", "workers", "bn_stats", "bn_batches", "graphs")
PRECISION_CHOICES = ("auto", "fp32", "tf32", "bf16")  # auto: tf32 on CUDA, fp32 elsewhere


@dataclass(frozen=True)
class TrainConfig:
    arch: str                       # a zoo name (canonical, not an alias)
    recipe: Recipe                  # the report's recipe, with any overrides applied
    seed: int = 0                   # model init, dropout seeds, shuffling and augmentation
    device: str = "auto"            # auto | cpu | cuda | emu
    precision: str = "auto"         # auto | fp32 | tf32 | bf16: the CUDA kernels' multiply (float32)
    data: str | None = None         # data folder (None: $MINICNN_DATA or the cache)
    limit: int | None = None        # keep only the first N images of every split (quick runs)
    workers: int = 0                # batches prepared ahead in a background thread (0: inline)
    bn_stats: str = "running"       # BN statistics for validation and test: running | recompute
    bn_batches: int = DEFAULT_BN_BATCHES  # recompute: training batches measured (minicnn.train.bn_stats)
    graphs: bool | None = None      # CUDA graphs for training steps (None: on where the device is cuda)

    def __post_init__(self):
        r = self.recipe
        checks = [
            (r.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {r.optimizer!r}"),
            (r.checkpoint in CHECKPOINT_RULES,
             f"checkpoint rule must be one of {', '.join(CHECKPOINT_RULES)}, got {r.checkpoint!r}"),
            (r.lr > 0 and math.isfinite(r.lr), f"--lr must be positive and finite, got {r.lr}"),
            (r.epochs >= 1, f"--epochs must be at least 1, got {r.epochs}"),
            (r.batch_size >= 1, f"--batch must be at least 1, got {r.batch_size}"),
            (self.limit is None or self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
            (self.seed >= 0, f"--seed must be 0 or more, got {self.seed}"),
            (self.workers >= 0, f"--workers must be 0 or more, got {self.workers}"),
            (self.device in DEVICE_NAMES, f"--device must be one of {', '.join(DEVICE_NAMES)}, got {self.device!r}"),
            (self.precision in PRECISION_CHOICES,
             f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)
        check_bn_stats(self.bn_stats, self.bn_batches)
        if self.device == "cpu":
            resolve_precision("cpu", self.precision)  # tf32 / bf16 there: a one-line DeviceError
        self.data_recipe()  # an unknown dataset, normalization, split or augmentation fails here

    @classmethod
    def from_spec(cls, spec, **overrides) -> "TrainConfig":
        """The spec's recipe with `overrides` (recipe or run fields; None means 'keep')."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        run = {k: overrides.pop(k) for k in RUN_FIELDS if k in overrides}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(spec.recipe)}
        if unknown:
            raise TrainError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(spec.name, dataclasses.replace(spec.recipe, **overrides), **run)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with run fields and/or recipe fields changed."""
        recipe_changes = {k: changes.pop(k) for k in list(changes) if k not in RUN_FIELDS and k != "arch"}
        return dataclasses.replace(self, recipe=dataclasses.replace(self.recipe, **recipe_changes), **changes)

    def data_recipe(self) -> DataRecipe:
        r = self.recipe
        return DataRecipe(dataset=r.dataset, preprocess=r.normalization, split=r.split, augment=r.augmentation)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of `epoch` (1-based): lr * gamma for every milestone already passed."""
        passed = sum(1 for m in self.recipe.lr_milestones if m < epoch)
        return self.recipe.lr * self.recipe.lr_gamma ** passed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # tuples become lists in JSON; from_dict turns them back

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        try:
            recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in values["recipe"].items()})
            return cls(**{**values, "recipe": recipe})
        except (KeyError, TypeError) as error:
            raise TrainError(f"not a minicnn training config ({error})") from None
