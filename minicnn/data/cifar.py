"""CIFAR-10 and CIFAR-100 from the official "python version" files, folder or .tar.gz.

Where the data lives: an explicit `root` (CLI `--data DIR`), else `$MINICNN_DATA`, else a
per-user cache (`$XDG_CACHE_HOME/minicnn`, default `~/.cache/minicnn`). Inside that folder the
loader takes the extracted folder (`cifar-10-batches-py/`) if present, else the official archive
(`cifar-10-python.tar.gz`), read in memory. `root` may also be the extracted folder itself.
"""
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .safe_pickle import safe_loads

IMAGE_SHAPE = (3, 32, 32)  # each stored row is the R plane, then G, then B, each row-major


@dataclass(frozen=True)
class CifarSpec:
    """Where one dataset comes from and how its official files are laid out."""
    name: str               # 'cifar10' | 'cifar100'
    title: str              # for messages: 'CIFAR-10'
    folder: str             # top folder inside the archive
    archive: str            # official archive file name
    url: str
    md5: str                # of the official archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes        # key of the labels list in each batch
    names_key: bytes        # key of the class-name list in the meta file
    num_classes: int


SPECS = {
    "cifar10": CifarSpec(
        "cifar10", "CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        b"labels", b"label_names", 10),
    "cifar100": CifarSpec(
        "cifar100", "CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", 100),
}
COARSE_CLASSES = 20  # CIFAR-100 superclasses


@dataclass(frozen=True)
class Cifar:
    """A loaded dataset. Images: (N, 3, 32, 32) uint8 NCHW; labels: (N,) int64."""
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: Path                            # the folder or archive it was read from
    train_coarse: np.ndarray | None = None  # CIFAR-100 only: (N,) int64 superclass labels
    test_coarse: np.ndarray | None = None
    coarse_classes: list[str] | None = None


def get_spec(name: str) -> CifarSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(SPECS)})") from None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder to look in: `root`, else $MINICNN_DATA, else the per-user cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("MINICNN_DATA"):
        return Path(os.environ["MINICNN_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "minicnn"


def find_source(spec: CifarSpec, root: str | os.PathLike | None = None) -> Path:
    """The extracted folder or the archive holding `spec`'s files, or a DataError saying how to get them."""
    base = data_root(root)
    if base.is_file() and base.name != spec.archive:
        raise DataError(f"{base} is a file, not a folder: point --data (or $MINICNN_DATA) at the folder that "
                        f"holds {spec.folder}/ or {spec.archive}, or at {spec.archive} itself")
    for candidate in (base / spec.folder, base, base / spec.archive):
        if candidate.is_dir() and (candidate / spec.meta_file).is_file():
            return candidate
        if candidate.is_file() and candidate.name == spec.archive:
            return candidate
    where = f" --root {base}" if root is not None else ""
    raise DataError(f"{spec.title} not found in {base} (looked for {spec.folder}/ and {spec.archive}); "
                    f"get it with `minicnn data download {spec.name}{where}`, or point --data DIR "
                    f"(or $MINICNN_DATA) at a folder that holds it")


def _read_files(source: Path, spec: CifarSpec, names) -> dict[str, bytes]:
    """name -> raw bytes of each file, from the folder or straight out of the archive."""
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise DataError(f"{source}: incomplete {spec.title} folder, missing {', '.join(missing)}")
        return {n: (source / n).read_bytes() for n in names}
    try:
        with tarfile.open(source, "r:gz") as tar:
            out = {}
            for n in names:
                member = tar.getmember(f"{spec.folder}/{n}")  # KeyError if absent
                if not member.isfile():
                    raise DataError(f"{source}: {member.name} is not a regular file")
                out[n] = tar.extractfile(member).read()
            return out
    except KeyError as e:
        raise DataError(f"{source}: archive lacks {e.args[0]}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{source}: unreadable archive, it may be truncated or corrupt ({e})") from None


def _as_dict(obj, where: str, keys) -> dict:
    if not isinstance(obj, dict) or not all(k in obj for k in keys):
        raise DataError(f"{where}: expected a dict with keys {[k.decode() for k in keys]}")
    return obj


def _labels(values, where: str, key: bytes, count: int, n: int) -> np.ndarray:
    labels = np.asarray(values)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: {key.decode()} must be {n} integers, got {labels.dtype} {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= count):
        raise DataError(f"{where}: {key.decode()} outside 0..{count - 1} "
                        f"(found {labels.min()}..{labels.max()})")
    return labels.astype(np.int64)


def _parse_batch(raw: bytes, where: str, spec: CifarSpec, label_keys):
    """One batch file -> images (N, 3, 32, 32) uint8 and one label array per key."""
    batch = _as_dict(safe_loads(raw, where), where, (b"data",) + label_keys)
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != np.prod(IMAGE_SHAPE):
        shape = getattr(data, "shape", None)
        raise DataError(f"{where}: data must be a uint8 array of shape (N, 3072), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {shape}")
    n = len(data)
    counts = {spec.label_key: spec.num_classes, b"coarse_labels": COARSE_CLASSES}
    labels = [_labels(batch[k], where, k, counts[k], n) for k in label_keys]
    return data.reshape(n, *IMAGE_SHAPE), labels


def _names(meta: dict, key: bytes, count: int, where: str) -> list[str]:
    names = meta[key]
    if not isinstance(names, list) or len(names) != count or not all(isinstance(s, bytes) for s in names):
        raise DataError(f"{where}: {key.decode()} must list {count} names")
    return [s.decode("utf-8") for s in names]


def load_cifar(name: str = "cifar10", root: str | os.PathLike | None = None) -> Cifar:
    """Load the train and test splits of 'cifar10' or 'cifar100' (fine labels; coarse ones kept too)."""
    spec = get_spec(name)
    source = find_source(spec, root)
    files = _read_files(source, spec, (spec.meta_file,) + spec.train_files + spec.test_files)
    coarse = spec.name == "cifar100"
    label_keys = (spec.label_key, b"coarse_labels") if coarse else (spec.label_key,)
    name_keys = (spec.names_key, b"coarse_label_names") if coarse else (spec.names_key,)

    meta_where = str(source / spec.meta_file)
    meta = _as_dict(safe_loads(files[spec.meta_file], meta_where), meta_where, name_keys)
    classes = [_names(meta, k, c, meta_where) for k, c in zip(name_keys, (spec.num_classes, COARSE_CLASSES))]

    def split(file_names):
        parts = [_parse_batch(files[f], str(source / f), spec, label_keys) for f in file_names]
        images = np.concatenate([p[0] for p in parts])
        labels = [np.concatenate([p[1][i] for p in parts]) for i in range(len(label_keys))]
        return images, labels

    train_x, train_labels = split(spec.train_files)
    test_x, test_labels = split(spec.test_files)
    extra = dict(train_coarse=train_labels[1], test_coarse=test_labels[1], coarse_classes=classes[1]) if coarse else {}
    return Cifar(spec.name, train_x, train_labels[0], test_x, test_labels[0], classes[0], source, **extra)
