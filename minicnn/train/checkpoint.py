"""Checkpoints that a crash cannot corrupt, written without pickle.

A checkpoint is `<name>.npz` (arrays: weights, BN running stats, dropout seed/step, optimizer
moments) plus `<name>.json` (everything else: epoch, config, RNG states, best metric, the
metric history, class names, input normalization). The JSON text is ALSO stored inside the
.npz (as bytes under 'meta.json'), so the .npz alone is a complete, self-consistent checkpoint:
the two files are replaced one after the other, and a kill between the two replacements must
not pair new weights with old metadata. Loading therefore reads the .npz; the .json is the same
metadata for people and tools.

Each file is written to a temporary name in the same folder, flushed and fsync'ed, then moved
over the old one with os.replace (atomic on POSIX and Windows): at any instant the previous
checkpoint or the new one is complete on disk, never a mix.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn.train.errors import CheckpointError

FORMAT = 1
META_KEY = "meta.json"
MODEL, OPTIMIZER = "model.", "optimizer."


@dataclass
class Checkpoint:
    path: Path                      # the .npz it was read from
    model: dict                     # Module.state_dict() arrays
    optimizer: dict                 # Optimizer.state_dict(): arrays and the scalars step, lr
    meta: dict                      # epoch, config, rng, best, history, classes, normalizer


def write_atomically(path: Path, write) -> None:
    """write(file) into a temporary sibling, fsync it, then os.replace it onto `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left behind if the write failed or was interrupted
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def save_checkpoint(stem: Path, model, optimizer, meta: dict) -> Path:
    """Write `stem`.npz and `stem`.json; returns the .npz path. meta must be JSON-serializable."""
    stem = Path(stem)
    optimizer_state = optimizer.state_dict()
    arrays = {MODEL + k: v for k, v in model.state_dict().items()}
    arrays.update({OPTIMIZER + k: v for k, v in optimizer_state.items() if isinstance(v, np.ndarray)})
    scalars = {k: v for k, v in optimizer_state.items() if not isinstance(v, np.ndarray)}
    text = json.dumps({"format": FORMAT, **meta, "optimizer": scalars}, indent=1)
    arrays[META_KEY] = np.frombuffer(text.encode(), np.uint8)
    npz = stem.with_name(stem.name + ".npz")
    write_atomically(npz, lambda file: np.savez(file, **arrays))
    write_atomically(stem.with_name(stem.name + ".json"), lambda file: file.write(text.encode()))
    return npz


def find_checkpoint(path, prefer: str = "best") -> Path:
    """The .npz meant by `path`: a run folder (its `prefer`.npz, else last.npz), a .npz, a .json or a stem."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, "last"):
            if (path / f"{name}.npz").is_file():
                return path / f"{name}.npz"
        raise CheckpointError(f"{path}: no checkpoint in this folder (expected {prefer}.npz or last.npz); "
                              f"is it a run folder written by `minicnn train`?")
    npz = path.with_suffix(".npz") if path.suffix in (".json", "") else path
    if not npz.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (looked for {npz})")
    return npz


def load_checkpoint(path, prefer: str = "best") -> Checkpoint:
    """Read a checkpoint (see find_checkpoint for what `path` may be); never unpickles."""
    npz = find_checkpoint(path, prefer)
    with open(npz, "rb") as file:
        head = file.read(2)
    if head and head != b"PK":  # every .npz is a zip archive; np.load would talk about pickles
        raise CheckpointError(f"{npz}: not a checkpoint (minicnn checkpoints are .npz archives written by "
                              f"`minicnn train`; this file is something else)")
    try:
        with np.load(npz, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        detail = (str(error).splitlines() or [""])[0]
        raise CheckpointError(f"{npz}: unreadable checkpoint, truncated or corrupt "
                              f"({type(error).__name__}: {detail})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{npz}: checkpoint format {meta.get('format')!r}, this minicnn reads {FORMAT}")
    model = {k[len(MODEL):]: v for k, v in arrays.items() if k.startswith(MODEL)}
    optimizer = {k[len(OPTIMIZER):]: v for k, v in arrays.items() if k.startswith(OPTIMIZER)}
    optimizer.update(meta.pop("optimizer"))
    return Checkpoint(npz, model, optimizer, meta)


def restore(checkpoint: Checkpoint, model, optimizer=None) -> None:
    """Copy the checkpoint into `model` (and `optimizer`), or one line saying what does not fit."""
    try:
        model.load_state_dict(checkpoint.model)
        if optimizer is not None:
            optimizer.load_state_dict(checkpoint.optimizer)
    except ValueError as error:
        arch = checkpoint.meta.get("config", {}).get("arch", "?")
        detail = str(error).removeprefix("state does not fit this model")
        raise CheckpointError(f"{checkpoint.path} (a '{arch}' checkpoint) does not fit this model{detail}") from None


def newest_intact(run_dir, log) -> Checkpoint:
    """The run's last.npz, or, when that cannot be read (a disk filled up, a copy cut short), the
    newest readable checkpoint of the folder (best, epoch-NNN), with one line saying which one
    and how many epochs going back to it costs."""
    run_dir = Path(run_dir)
    try:
        return load_checkpoint(run_dir / "last.npz")
    except CheckpointError as error:
        problem = str(error)
    intact = []
    for path in sorted(run_dir.glob("*.npz")):
        if path.name != "last.npz" and not path.name.startswith("."):
            try:
                intact.append(load_checkpoint(path))
            except CheckpointError:
                continue
    if not intact:
        raise CheckpointError(f"{problem}; no other checkpoint in {run_dir} can be read either, "
                              f"so there is nothing to resume from")
    newest = max(intact, key=lambda checkpoint: checkpoint.meta["epoch"])
    epoch = newest.meta["epoch"]
    try:  # last.json is written beside last.npz, so it usually survives and says what was lost
        lost = f"{json.loads((run_dir / 'last.json').read_text())['epoch'] - epoch} epoch(s)"
    except (OSError, ValueError, KeyError, TypeError):
        lost = "the epochs after it"
    log(f"{problem.split(' (')[0]}; resuming from {newest.path.name} instead (epoch {epoch}): "
        f"{lost} will be trained again")
    return newest
