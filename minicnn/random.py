"""The one seedable source of randomness for initialization and dropout seeds.

`manual_seed(s)` makes model construction reproducible: every initializer and every Dropout
layer draws from this generator. (Data shuffling and augmentation take their own generators.)
"""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator
