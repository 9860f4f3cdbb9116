"""Downloads against the loopback HTTP server of conftest.py (Range support, a switch to cut a
transfer short), and archive extraction with hostile members. No test touches the network beyond
127.0.0.1."""
import hashlib
import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest

from retrievalkit.datasets import download as D


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


BODY = os.urandom(300_000)


def test_good_file_with_known_hash(server, tmp_path):
    server.files["a.bin"] = BODY
    for known in (f"sha256:{_sha256(BODY)}", f"md5:{hashlib.md5(BODY).hexdigest()}"):
        out = D.fetch(server.url("a.bin"), tmp_path / known[:3] / "a.bin", known, progress=False)
        assert out == tmp_path / known[:3] / "a.bin" and out.read_bytes() == BODY
        assert sorted(p.name for p in out.parent.iterdir()) == ["a.bin"]  # no .part, nothing recorded
    # already there with the right hash: no second request
    n = len(server.seen)
    D.fetch(server.url("a.bin"), tmp_path / "sha" / "a.bin", f"sha256:{_sha256(BODY)}", progress=False)
    assert len(server.seen) == n


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    server.files["a.bin"] = BODY
    wrong = "0" * 64
    with pytest.raises(D.ChecksumError) as e:
        D.fetch(server.url("a.bin"), tmp_path / "dl" / "a.bin", f"sha256:{wrong}", progress=False)
    msg = str(e.value)
    assert "a.bin" in msg and wrong in msg and _sha256(BODY) in msg
    assert list((tmp_path / "dl").iterdir()) == []


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.files["a.bin"] = BODY
    server.cut_after = 100_000
    path = tmp_path / "a.bin"
    with pytest.raises(D.DownloadError, match="resume"):
        D.fetch(server.url("a.bin"), path, f"sha256:{_sha256(BODY)}", progress=False, retries=0)
    part = tmp_path / "a.bin.part"
    assert not path.exists() and 0 < part.stat().st_size <= 100_000
    assert part.read_bytes() == BODY[: part.stat().st_size]
    kept = part.stat().st_size
    D.fetch(server.url("a.bin"), path, f"sha256:{_sha256(BODY)}", progress=False, retries=0)
    assert server.seen[-1] == ("/a.bin", f"bytes={kept}-")
    assert path.read_bytes() == BODY and not part.exists()


def test_dropped_connection_is_resumed_within_one_call(server, tmp_path):
    server.files["a.bin"] = BODY
    server.cut_after = 150_000
    path = D.fetch(server.url("a.bin"), tmp_path / "a.bin", progress=False, retries=1)
    assert path.read_bytes() == BODY
    assert server.seen[0][1] is None and server.seen[1][1].startswith("bytes=")


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.files["a.bin"] = BODY
    (tmp_path / "a.bin.part").write_bytes(BODY[:1000])
    server.ranges = False
    D.fetch(server.url("a.bin"), tmp_path / "a.bin", f"sha256:{_sha256(BODY)}", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == BODY


def test_stale_part_longer_than_file_is_discarded(server, tmp_path):
    server.files["a.bin"] = BODY
    (tmp_path / "a.bin.part").write_bytes(b"x" * (len(BODY) + 10))  # server answers 416
    D.fetch(server.url("a.bin"), tmp_path / "a.bin", f"sha256:{_sha256(BODY)}", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == BODY
    assert [r for _, r in server.seen] == [f"bytes={len(BODY) + 10}-", None]


def test_first_seen_hash_is_recorded_then_enforced(server, tmp_path):
    server.files["a.bin"] = BODY
    path, hashes = tmp_path / "cache" / "a.bin", tmp_path / "hashes.json"
    D.fetch(server.url("a.bin"), path, progress=False, hashes=hashes)
    assert json.loads(hashes.read_text()) == {server.url("a.bin"): f"sha256:{_sha256(BODY)}"}
    # the same file again: fine; a changed file: refused, nothing left
    path.unlink()
    D.fetch(server.url("a.bin"), path, progress=False, hashes=hashes)
    path.unlink()
    server.files["a.bin"] = BODY[::-1]
    with pytest.raises(D.ChecksumError, match="hashes.json") as e:
        D.fetch(server.url("a.bin"), path, progress=False, hashes=hashes)
    assert _sha256(BODY) in str(e.value) and _sha256(BODY[::-1]) in str(e.value)
    assert list(path.parent.iterdir()) == []
    assert json.loads(hashes.read_text()) == {server.url("a.bin"): f"sha256:{_sha256(BODY)}"}


def test_default_hash_record_sits_beside_the_file(server, tmp_path):
    server.files["a.bin"] = BODY
    D.fetch(server.url("a.bin"), tmp_path / "a.bin", progress=False)
    assert json.loads((tmp_path / "hashes.json").read_text()) == {server.url("a.bin"): f"sha256:{_sha256(BODY)}"}


def test_missing_file_and_bad_arguments(server, tmp_path):
    import requests

    with pytest.raises(requests.HTTPError, match="404"):
        D.fetch(server.url("nope"), tmp_path / "nope", progress=False)
    with pytest.raises(ValueError, match="url"):
        D.fetch("file:///etc/passwd", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="retries"):
        D.fetch(server.url("nope"), tmp_path / "x", retries=-1)


# ---------------------------------------------------------------- archives

def _tar(path, members):
    """members: (TarInfo kwargs, bytes or None)."""
    with tarfile.open(path, "w:gz") as tf:
        for kw, data in members:
            info = tarfile.TarInfo(kw.pop("name"))
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if data is not None else 0
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extract_tar_and_zip(tmp_path):
    tgz = _tar(tmp_path / "a.tgz", [({"name": "top/x.txt"}, b"x"), ({"name": "top/sub", "type": tarfile.DIRTYPE}, None),
                                    ({"name": "top/sub/y.txt"}, b"yy")])
    out = D.extract(tgz, tmp_path / "out" / "t")
    assert (out / "top" / "x.txt").read_bytes() == b"x" and (out / "top" / "sub" / "y.txt").read_bytes() == b"yy"
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("full/a.jpg", b"a")
        zf.writestr("thumbnails/a.jpg", b"b")
    out = D.extract(tmp_path / "a.zip", tmp_path / "out" / "z")
    assert (out / "full" / "a.jpg").read_bytes() == b"a" and (out / "thumbnails" / "a.jpg").read_bytes() == b"b"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t", "z"]  # no temporary folder left
    with pytest.raises(FileExistsError, match="dest"):
        D.extract(tgz, tmp_path / "out" / "t")
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="archive"):
        D.extract(tmp_path / "plain.txt", tmp_path / "out" / "p")


HOSTILE_TARS = {
    "dotdot": [({"name": "ok.txt"}, b"fine"), ({"name": "../evil"}, b"pwned")],
    "nested dotdot": [({"name": "a/../../evil"}, b"pwned")],
    "absolute": [({"name": "/tmp/evil-retrievalkit-test"}, b"pwned")],
    "symlink out": [({"name": "passwd", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)],
    "symlink then write through it": [({"name": "d", "type": tarfile.SYMTYPE, "linkname": ".."}, None),
                                      ({"name": "d/evil"}, b"pwned")],
    "hardlink": [({"name": "h", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, None)],
    "device": [({"name": "dev", "type": tarfile.CHRTYPE}, None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_members_are_refused(tmp_path, case):
    tgz = _tar(tmp_path / "evil.tgz", [(dict(kw), data) for kw, data in HOSTILE_TARS[case]])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(D.UnsafeArchiveError, match="refusing"):
        D.extract(tgz, work / "dest")
    assert list(work.iterdir()) == []  # no dest, no temporary folder, no ../evil
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "work"]
    assert not os.path.exists("/tmp/evil-retrievalkit-test")


def test_hostile_zip_members_are_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../evil", b"pwned")
    with pytest.raises(D.UnsafeArchiveError, match=r"\.\./evil"):
        D.extract(tmp_path / "evil.zip", work / "dest")
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("passwd")
        info.external_attr = (0o120777 << 16)  # a symbolic link, as Info-ZIP stores one
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(D.UnsafeArchiveError, match="link"):
        D.extract(tmp_path / "link.zip", work / "dest")
    assert list(work.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_write_atomic_replaces_whole_file(tmp_path):
    p = D.write_atomic(tmp_path / "sub" / "f.json", b"one")
    D.write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and sorted(x.name for x in p.parent.iterdir()) == ["f.json"]


def test_write_atomic_takes_a_writer_keeps_the_old_file_on_error_and_honours_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        p = D.write_atomic(tmp_path / "a.npy", lambda f: np.save(f, np.arange(3)))
    finally:
        os.umask(old)
    assert np.load(p).tolist() == [0, 1, 2]
    assert p.stat().st_mode & 0o777 == 0o640  # as open() would make it, not mkstemp's 0o600

    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        D.write_atomic(p, fails)
    assert np.load(p).tolist() == [0, 1, 2] and [x.name for x in tmp_path.iterdir()] == ["a.npy"]
