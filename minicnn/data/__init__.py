"""Datasets for minicnn: CIFAR-10/100 loading (safe), download, splits, augmentation, batching.

    from minicnn.data import DataRecipe, prepare_data, split_loaders
    splits = prepare_data(DataRecipe(preprocess="scale"))    # CIFAR-10 /255, validation = test
    # (each network's recipe in minicnn.models says which DataRecipe it trains with)
    loaders = split_loaders(splits, batch_size=512, seed=0)    # device="cpu"; or get_device("cuda")
    for x, y in loaders["train"]: ...                        # x: (B, 3, 32, 32) float32, y: (B,) int64
"""
from .augment import (PRESETS, AugmentParams, AugmentSpec, affine_inverse, apply_params, augment,
                      augment_preset, sample_params)
from .cifar import SPECS, Cifar, CifarSpec, data_root, find_source, get_spec, load_cifar
from .download import download
from .errors import DataError
from .loader import BatchLoader, split_loaders
from .safe_pickle import RestrictedUnpickler, safe_loads
from .splits import DataRecipe, DataSplits, Normalizer, holdout_indices, prepare_data

__all__ = [
    "PRESETS", "AugmentParams", "AugmentSpec", "affine_inverse", "apply_params", "augment",
    "augment_preset", "sample_params", "SPECS", "Cifar", "CifarSpec", "data_root", "find_source",
    "get_spec", "load_cifar", "download", "DataError", "BatchLoader", "split_loaders", "RestrictedUnpickler",
    "safe_loads", "DataRecipe", "DataSplits", "Normalizer", "holdout_indices", "prepare_data",
]
