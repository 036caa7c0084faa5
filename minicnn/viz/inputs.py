"""The images a figure is drawn for: test-set images by index, or any image file.

Each comes twice: as uint8 pixels to show, and normalized exactly as the run's training
inputs were, to feed the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn.data import load_cifar
from minicnn.train.evaluate import read_image
from minicnn.viz.runs import LoadedRun, VizError


WANTED = "give an image file, or a test-set index (7), range (0-15) or list (3,5,9-11)"


@dataclass
class Inputs:
    pixels: np.ndarray          # (N, 3, 32, 32) uint8, to show
    x: np.ndarray               # (N, 3, 32, 32) float32, normalized, to feed the model
    labels: np.ndarray | None   # (N,) true classes (None for an image file)
    names: list[str]            # for titles and file names: 'test 7', 'my_cat'

    @property
    def tag(self) -> str:
        """A file-name part: img7, img0-15, my_cat."""
        if self.labels is None:
            return self.names[0]
        numbers = [int(name.split()[-1]) for name in self.names]
        return f"img{numbers[0]}" if len(numbers) == 1 else f"img{numbers[0]}-{numbers[-1]}"


def parse_indices(text: str) -> list[int]:
    """'7' -> [7]; '0-15' -> [0..15]; '3,5,9-11' -> [3, 5, 9, 10, 11]."""
    indices = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            indices += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise VizError(f"--image {text}: {WANTED}") from None
    if not indices:
        raise VizError(f"--image {text}: the range is empty")
    return indices


def _normalize(run: LoadedRun, pixels: np.ndarray) -> np.ndarray:
    return run.normalizer(pixels.astype(np.float32), np)


def from_test_set(run: LoadedRun, indices, data=None, data_dir=None) -> Inputs:
    """Test-set images by index. data: a loaded minicnn.data.Cifar (else read from data_dir,
    else from where the run read its data)."""
    data = data or load_cifar(run.dataset, data_dir or run.data_dir)
    count = len(data.test_y)
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise VizError(f"image index {bad[0]} is out of range: the {run.dataset} test set has "
                       f"{count} images (0-{count - 1})")
    pixels = data.test_x[list(indices)]
    return Inputs(pixels, _normalize(run, pixels), data.test_y[list(indices)], [f"test {i}" for i in indices])


def from_file(run: LoadedRun, path) -> Inputs:
    """Any image file Pillow reads, as 32x32 RGB (resized bilinearly)."""
    path = Path(path)
    pixels = read_image(path)
    return Inputs(pixels, _normalize(run, pixels), None, [path.stem])


def choose_inputs(run: LoadedRun, spec: str, data=None, data_dir=None) -> Inputs:
    """spec: an image file path, else an index, a range or a list of indices."""
    if Path(spec).is_file():
        return from_file(run, spec)
    if not spec[:1].isdigit():
        raise VizError(f"--image {spec}: no such image file; {WANTED}")
    return from_test_set(run, parse_indices(spec), data, data_dir)
