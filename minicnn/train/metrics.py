"""What a run leaves for people: metrics.csv (one row per epoch), curves.png, confusion matrices.

Plots use matplotlib's object API (Figure + Agg canvas), never pyplot, so no global backend is
switched and nothing needs a display. matplotlib is imported by the functions that draw: it takes
about a second to import, which every command that draws nothing would otherwise pay. Files are
rewritten whole from the run's history, through the same atomic write as checkpoints: after a
resume they hold exactly the epochs that happened.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from minicnn.train.checkpoint import write_atomically

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """history: one dict per epoch with the COLUMNS keys."""
    lines = [",".join(COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS)
              for row in history]
    write_atomically(Path(path), lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_atomically(Path(path), lambda f: f.write(buffer.getvalue()))


def plot_curves(path: Path, history: list[dict], title: str, val_label: str = "validation") -> None:
    """Loss and accuracy per epoch, train against validation, side by side."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    figure = Figure(figsize=(10, 4), layout="constrained")
    epochs = [row["epoch"] for row in history]
    for axes, metric, name in zip(figure.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        axes.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", label="train")
        axes.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", label=val_label)
        axes.set(xlabel="epoch", ylabel=name, title=f"{title}: {name}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    _save(figure, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def plot_confusion(path: Path, matrix: np.ndarray, classes: list[str], title: str) -> None:
    """Row-normalized confusion matrix (each row sums to 1); counts are printed in cells when K <= 20."""
    from matplotlib.figure import Figure
    k = len(classes)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.35 * k)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    if k <= 20:
        axes.set_xticks(range(k), classes, rotation=60, ha="right")
        axes.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if rates[i, j] > 0.5 else "black")
    axes.set(xlabel="predicted", ylabel="true", title=title)
    _save(figure, path)
