"""Fetch an official CIFAR archive, check it, and unpack it so a half-done job is never mistaken for data.

The steps, each safe to interrupt:
  1. stream the archive into `<root>/<archive>.part`, resuming with an HTTP Range request when a
     .part is already there (and starting over if the server ignores the Range);
  2. check the MD5 of the whole file; a mismatch deletes the .part;
  3. unpack into a fresh temporary folder inside `root`, refusing any member that is not a plain
     file or folder under the expected top folder;
  4. rename the unpacked folder into place (one atomic step), then delete the .part.
Only step 4 makes `<root>/<folder>` appear, so the loader never sees a partial dataset.
"""
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from minicnn.progress import hide_bar

from .cifar import CifarSpec, data_root, get_spec
from .errors import DataError

CHUNK = 1 << 16


def download(name: str, root: str | os.PathLike | None = None, url: str | None = None,
             md5: str | None = None, progress: bool = True) -> Path:
    """Download and unpack dataset `name` into `root` (default: see `data_root`); returns its folder.

    `url` and `md5` replace the official ones (tests use a local server); the check is never skipped.
    """
    spec = get_spec(name)
    root = data_root(root)
    target = root / spec.folder
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    part = root / (spec.archive + ".part")
    url = url or spec.url
    _fetch(url, part, progress)
    _check_md5(part, md5 or spec.md5)
    _extract(part, spec, root)
    part.unlink()
    return target


def _fetch(url: str, part: Path, progress: bool) -> None:
    """Stream `url` into `part`, appending to what a previous attempt left there."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send from `offset`
            if e.headers.get("Content-Range") == f"bytes */{offset}":
                return  # the .part is already whole (say, unpacking failed last time)
            part.unlink()  # the .part is longer than the file: start over
            return _fetch(url, part, progress)
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"download of {url} failed: {getattr(e, 'reason', e)}") from None
    with response:
        resumed = offset and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0  # the server sent the whole file: overwrite the .part
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        received = offset
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, disable=hide_bar(progress),
                     desc=part.name.removesuffix(".part")) as bar:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:  # e.g. IncompleteRead
                raise DataError(f"download of {url} interrupted after {received} bytes ({e}); "
                                "run the same command again to resume") from None
    if total is not None and received != total:
        raise DataError(f"download of {url} interrupted after {received} of {total} bytes; "
                        "run the same command again to resume")


def _check_md5(path: Path, expected: str) -> None:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        path.unlink()
        raise DataError(f"{path}: MD5 {digest.hexdigest()} does not match the expected {expected}; "
                        "the bad download was deleted, run the command again")


def _member_path(member: tarfile.TarInfo, folder: str, archive: Path) -> PurePosixPath:
    """The member's relative path, or a DataError if unpacking it could escape or surprise."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: refused member '{member.name}' (absolute path or '..')")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refused member '{member.name}' (links and special files are not allowed)")
    if path.parts[0] != folder:
        raise DataError(f"{archive}: refused member '{member.name}' (outside {folder}/)")
    return path


def _extract(archive: Path, spec: CifarSpec, root: Path) -> None:
    """Unpack `archive` (all of it under `spec.folder/`) into `root/spec.folder`, all or nothing."""
    folder = spec.folder
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    dest = staging.joinpath(*_member_path(member, folder, archive).parts)
                    if member.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{archive}: cannot unpack ({e})") from None
        expected = (spec.meta_file,) + spec.train_files + spec.test_files
        missing = [f for f in expected if not (staging / folder / f).is_file()]
        if missing:
            raise DataError(f"{archive}: lacks {', '.join(f'{folder}/{f}' for f in missing)}")
        os.replace(staging / folder, root / folder)  # atomic: the dataset appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
