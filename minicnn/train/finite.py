"""NaN, inf and exploding numbers: found where they appear, said once, never saved as a result.

A diverging run shows itself in several places: the running training loss (checked every few
steps), the last steps of an epoch (whose updates only validation sees), the validation and test
figures, and the weights themselves. A loss can also explode while staying finite (9e30 with
accuracy at chance): that is not an error, but it is worth one warning.
"""
from __future__ import annotations

import math

import numpy as np

# a cross-entropy this many times the chance level ln(K) means the run has blown up, not that it
# is learning slowly (a confident but wrong network early in training stays within ~10x)
EXPLODED = 100


def format_loss(value: float) -> str:
    """A loss for people: 4 decimals in the usual range, scientific notation outside it."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"


def finite_or_none(value):
    """The number, or None (JSON null) when it is NaN or infinite; JSON has no NaN."""
    return value if value is None or math.isfinite(value) else None


def non_finite_arrays(arrays: dict, xp=np) -> list[str]:
    """The names of the float arrays holding a NaN or an inf. arrays: {name: array of module xp}."""
    return [name for name, array in arrays.items()
            if np.issubdtype(array.dtype, np.floating) and not bool(xp.isfinite(array).all())]


def exploded(loss: float, num_classes: int) -> bool:
    """Whether a finite loss is far beyond chance (ln K) for a K-class cross-entropy."""
    return loss > EXPLODED * math.log(num_classes)


def names_in_short(names: list[str], shown: int = 3) -> str:
    """'a, b, c and 4 more' for messages that must stay one readable line."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"
