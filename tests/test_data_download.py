"""download(): a loopback HTTP server serves the archive prepare.py writes; MD5s are injected."""
import hashlib
import io
import tarfile

import pytest

from data_fixtures import cifar10_root, md5_of, serve  # noqa: F401
from minicnn.data import DataError, download, load_cifar

FOLDER = "cifar-10-batches-py"
PART = "cifar-10-python.tar.gz.part"


@pytest.fixture(scope="module")
def archive(cifar10_root):
    """(bytes, md5) of the rebuilt official archive."""
    path = cifar10_root / "cifar-10-python.tar.gz"
    return path.read_bytes(), md5_of(path)


def assert_same_files(got, cifar10_root):
    source = cifar10_root / FOLDER
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    for name in names:
        assert (got / name).read_bytes() == (source / name).read_bytes(), name


def assert_clean(root):
    """Nothing but (perhaps) the .part: no dataset folder and no staging folder left behind."""
    assert [p.name for p in root.iterdir() if p.name != PART] == []


def test_download_verifies_and_unpacks(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    with serve(payload) as server:
        folder = download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
        assert folder == tmp_path / FOLDER and server.requests == [None]
        assert_same_files(folder, cifar10_root)
        assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER]   # .part and staging gone
        assert download("cifar10", tmp_path, url=server.url, md5=md5) == folder   # present: no new request
        assert len(server.requests) == 1
    assert len(load_cifar("cifar10", tmp_path).test_y) == 10_000


def test_resume_uses_range_request(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    done = len(payload) * 2 // 5
    (tmp_path / PART).write_bytes(payload[:done])
    with serve(payload) as server:
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert server.requests == [f"bytes={done}-"] and server.sent == len(payload) - done
    assert_same_files(tmp_path / FOLDER, cifar10_root)


def test_complete_part_is_verified_not_fetched_again(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    (tmp_path / PART).write_bytes(payload)
    with serve(payload) as server:
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert server.requests == [f"bytes={len(payload)}-"] and server.sent == 0
    assert_same_files(tmp_path / FOLDER, cifar10_root)


def test_part_longer_than_the_file_starts_over(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    (tmp_path / PART).write_bytes(payload + b"junk")
    with serve(payload) as server:
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert server.requests == [f"bytes={len(payload) + 4}-", None] and server.sent == len(payload)
    assert_same_files(tmp_path / FOLDER, cifar10_root)


def test_server_ignoring_range_restarts_cleanly(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    (tmp_path / PART).write_bytes(b"stale bytes from some other file")
    with serve(payload, honour_range=False) as server:
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert server.requests == ["bytes=32-"] and server.sent == len(payload)
    assert_same_files(tmp_path / FOLDER, cifar10_root)


def test_checksum_mismatch_deletes_the_part(tmp_path, archive):
    payload, md5 = archive
    wrong = "0" * 32
    with serve(payload) as server, pytest.raises(DataError, match=f"MD5 {md5} does not match the expected {wrong}"):
        download("cifar10", tmp_path, url=server.url, md5=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_no_dataset_then_resumes(tmp_path, archive, cifar10_root):
    payload, md5 = archive
    cut = 10_000_000
    with serve(payload, cut_after=cut) as server, pytest.raises(DataError, match="interrupted after"):
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert_clean(tmp_path)
    assert (tmp_path / PART).stat().st_size == cut
    with pytest.raises(DataError, match="not found"):
        load_cifar("cifar10", tmp_path)
    with serve(payload) as server:
        download("cifar10", tmp_path, url=server.url, md5=md5, progress=False)
    assert server.requests == [f"bytes={cut}-"]
    assert_same_files(tmp_path / FOLDER, cifar10_root)


def test_http_error_is_one_line(tmp_path):
    with serve(b"") as server, pytest.raises(DataError, match=r"^download of .*/missing failed: HTTP 404"):
        download("cifar10", tmp_path, url=server.url.rsplit("/", 1)[0] + "/missing", md5="0" * 32)


def test_unreachable_server(tmp_path):
    with serve(b"") as server:
        url = server.url
    with pytest.raises(DataError, match=r"^download of http://127\.0\.0\.1:\d+/\S+ failed"):
        download("cifar10", tmp_path, url=url, md5="0" * 32)


def tar_gz(members) -> bytes:
    """members: (TarInfo, bytes or None) -> a .tar.gz in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name, data=b"x"):
    return tarfile.TarInfo(name), data


def link_member(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("members, reason", [
    ([file_member(f"{FOLDER}/../../escaped.txt")], "absolute path or '..'"),
    ([file_member("/tmp/escaped.txt")], "absolute path or '..'"),
    ([link_member(f"{FOLDER}/batches.meta", "/etc/passwd", tarfile.SYMTYPE)], "links and special files"),
    ([link_member(f"{FOLDER}/batches.meta", "../x", tarfile.LNKTYPE)], "links and special files"),
    ([file_member(f"{FOLDER}/batches.meta"), file_member("other/readme")], "outside cifar-10-batches-py/"),
])
def test_unsafe_archive_member_is_refused(tmp_path, members, reason):
    root = tmp_path / "root"
    payload = tar_gz(members)
    with serve(payload) as server, pytest.raises(DataError, match=f"refused member .*{reason}"):
        download("cifar10", root, url=server.url, md5=hashlib.md5(payload).hexdigest(),
                 progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert_clean(root)


def test_archive_lacking_files_is_refused(tmp_path):
    payload = tar_gz([file_member(f"{FOLDER}/batches.meta")])
    with serve(payload) as server, pytest.raises(DataError, match=f"lacks {FOLDER}/data_batch_1"):
        download("cifar10", tmp_path, url=server.url, md5=hashlib.md5(payload).hexdigest(),
                 progress=False)
    assert_clean(tmp_path)
