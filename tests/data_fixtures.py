"""Shared helpers for the tests/test_data_*.py files: the rebuilt CIFAR-10, Python-2 pickles, a loopback server."""
import hashlib
import importlib.util
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
PREPARE = SHARED / "data" / "cifar10" / "prepare.py"
_CACHE = {}


def _prepare_module():
    """prepare.py as a module: its encoders write pickles exactly as the official Python 2 files are."""
    if "module" not in _CACHE:
        if not PREPARE.is_file():
            pytest.skip(f"{PREPARE} not found (shared/ must sit beside the repository)")
        spec = importlib.util.spec_from_file_location("cifar10_prepare", PREPARE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _CACHE["module"] = module
    return _CACHE["module"]


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """A folder holding cifar-10-batches-py/ and cifar-10-python.tar.gz, built once per session."""
    if "root" not in _CACHE:
        if not PREPARE.is_file():
            pytest.skip(f"{PREPARE} not found (shared/ must sit beside the repository)")
        root = tmp_path_factory.mktemp("cifar10")
        subprocess.run([sys.executable, str(PREPARE), "--out", str(root), "--tar"], check=True,
                       stdout=subprocess.DEVNULL)
        _CACHE["root"] = root
    return _CACHE["root"]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def py2_pickle(pairs) -> bytes:
    """A Python-2 protocol-2 pickle of a dict, as the official files are written.

    pairs: (bytes key, value) with value a uint8 2-D array, a list of ints, a list of bytes, or an int.
    """
    p = _prepare_module()

    def encode(value):
        if isinstance(value, np.ndarray):
            return p._uint8_matrix(np.ascontiguousarray(value))
        if isinstance(value, list):
            return p._list(p._str(v) if isinstance(v, bytes) else p._int(int(v)) for v in value)
        return p._int(value)

    return p._pickle_dict([(k, encode(v)) for k, v in pairs])


def cifar10_batch(images: np.ndarray, labels) -> bytes:
    """images: (N, 3, 32, 32) uint8 -> a data_batch file."""
    return py2_pickle([(b"batch_label", 0), (b"labels", list(labels)),
                       (b"data", images.reshape(len(images), -1))])


def write_cifar100(root: Path, n_train=60, n_test=20, seed=0, fine_labels=None) -> dict:
    """A small synthetic CIFAR-100 in the official layout under root/cifar-100-python; returns its arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = rng.integers(0, 100, n) if fine_labels is None or split == "test" else np.asarray(fine_labels)
        coarse = fine // 5
        arrays[split] = (x, fine, coarse)
        (folder / split).write_bytes(py2_pickle([
            (b"filenames", [f"img_{i}.png".encode() for i in range(n)]), (b"batch_label", 0),
            (b"fine_labels", list(fine)), (b"coarse_labels", list(coarse)), (b"data", x.reshape(n, -1))]))
    (folder / "meta").write_bytes(py2_pickle([
        (b"fine_label_names", [f"fine{i}".encode() for i in range(100)]),
        (b"coarse_label_names", [f"coarse{i}".encode() for i in range(20)])]))
    return arrays


class _ArchiveHandler(BaseHTTPRequestHandler):
    """Serves server.payload at any path but /missing; Range support and a cut-off are switchable."""

    def do_GET(self):
        server = self.server
        server.requests.append(self.headers.get("Range"))
        if self.path == "/missing":
            self.send_error(404)
            return
        size, start = len(server.payload), 0
        asked = self.headers.get("Range")
        if asked and server.honour_range:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        end = size if server.cut_after is None else min(size, start + server.cut_after)
        self.wfile.write(server.payload[start:end])
        server.sent += end - start

    def log_message(self, *args):
        pass


@contextmanager
def serve(payload: bytes, honour_range=True, cut_after=None):
    """An HTTP server on 127.0.0.1 serving `payload`; yields it with .url, .requests and .sent."""
    server = HTTPServer(("127.0.0.1", 0), _ArchiveHandler)
    server.payload, server.honour_range, server.cut_after = payload, honour_range, cut_after
    server.requests, server.sent = [], 0
    server.url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
