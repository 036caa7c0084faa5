"""Run folders that two processes never share: claimed atomically, locked while a process trains.

Two trainings started in the same second used to pick the same `<arch>-<time>` name, because
the folder was chosen by "does it exist?" and created later. `claim_folder` creates the folder
itself with a mkdir that fails when the name is taken, then tries `-2`, `-3` ...: whoever's
mkdir succeeds owns the name.

While a process trains in a folder it holds `.lock` there: an exclusive flock (fcntl) on a file
that names the owner (pid, host, start time). The kernel drops a flock when its process dies,
however it dies (kill -9 included), so a stale lock needs no guessing from pids: the next
process simply gets it and says whose lock it took over. The file is removed on release; a
process that opened it just before the removal checks, once it holds the lock, that the path
still names the file it locked, and otherwise tries again.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import time
from pathlib import Path

from minicnn.train.errors import TrainError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows has no flock: there the lock file only records the owner
    fcntl = None


def claim_folder(parent, stem: str, flag: str = "--out") -> Path:
    """Create and return parent/stem, else parent/stem-2, stem-3 ... (the first name nobody holds)."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            folder = parent / (stem if n == 1 else f"{stem}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as error:
        raise TrainError(f"{flag} {parent}: cannot create a run folder there ({_why(error)})") from None


def _why(error: OSError) -> str:
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way, not a folder"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "no permission to write there" if error.errno != errno.EROFS else "read-only file system"
    return error.strerror or type(error).__name__


class RunLock:
    """`with RunLock(run_dir, what):` holds run_dir/.lock for the block, or raises a TrainError
    naming the process that holds it. what: how the folder was asked for, for the message
    (e.g. '--resume runs/cnn4-...'). `took_over` is the stale owner's description, if any."""

    def __init__(self, run_dir, what: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.what = what
        self.file = None
        self.took_over: str | None = None

    def __enter__(self) -> "RunLock":
        while self.file is None:
            file = open(self.path, "a+")
            if not self._lock(file):
                owner = _describe(_read_owner(self.path))
                file.close()
                raise TrainError(f"{self.what}: this run is in use by {owner}; wait for it to finish "
                                 f"or stop it first (two processes must not write one run folder)")
            if not _same_file(file, self.path):  # removed by its previous owner meanwhile: retry
                file.close()
                continue
            previous = _read_owner(self.path)
            if previous:
                self.took_over = _describe(previous)
            file.seek(0)
            file.truncate()
            file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            file.flush()
            self.file = file
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # while still held: nobody can lock the old file meanwhile
        self.file.close()                   # closing drops the flock
        self.file = None

    @staticmethod
    def _lock(file) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def _same_file(file, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _read_owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {owner.get('since', '?')})"
