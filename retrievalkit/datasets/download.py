"""Downloads that survive real networks, and archives unpacked without trusting them.

:func:`fetch` is ``pooch.retrieve`` with a downloader that resumes a partial transfer with an
HTTP ``Range`` request: the file appears under its name only once complete and its hash
checked (atomic rename), a wrong hash leaves nothing behind, and files whose hash nobody
publishes get the SHA256 first seen recorded in ``hashes.json`` and enforced from then on.
:func:`extract` unpacks tar / zip archives into a fresh folder, refusing members that would
land outside it. :data:`REGISTRY` lists the benchmark files and their official hosts.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

import pooch
import requests
from tqdm.auto import tqdm

from .._atomic import write_atomic

__all__ = [
    "Remote",
    "REGISTRY",
    "TIMEOUT",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "fetch",
    "extract",
    "write_atomic",
]

TIMEOUT = (10, 60)
"""``(connect, read)`` seconds of every HTTP request."""


@dataclass(frozen=True)
class Remote:
    """A file to download: its URL, its size in bytes (for messages only) and a hash, where known.

    ``known_hash`` is pooch's form, ``"md5:<hex>"`` or ``"sha256:<hex>"``.
    """

    url: str
    size: int | None = None
    known_hash: str | None = None


_VGG = "https://www.robots.ox.ac.uk/~vgg/data/"
_VGG_HTTP = "http://www.robots.ox.ac.uk/~vgg/data/"
_REVISITOP = "http://cmp.felk.cvut.cz/revisitop/data/datasets/"
_HOLIDAYS = "ftp://ftp.inrialpes.fr/pub/lear/douze/data/"

REGISTRY: dict[str, Remote] = {
    # Oxford Buildings, face-blurred v1 archive (cirtorch / revisitop since 2022-06). Size and md5
    # come from one third-party dataset script, not from the VGG page: UNVERIFIED.
    "oxbuild_images-v1.tgz": Remote(_VGG + "oxbuildings/oxbuild_images-v1.tgz", 1_938_238_004,
                                    "md5:8f0017cc5d671f35011d6968269fbf47"),
    # Oxford ground-truth text files (yahoo/crow); md5 from the same third-party script: UNVERIFIED.
    "gt_files_170407.tgz": Remote(_VGG_HTTP + "oxbuildings/gt_files_170407.tgz", None,
                                  "md5:06c4dee0ad954f6ee122c82390548537"),
    # Paris, face-blurred v1 archives (cirtorch / revisitop). The paris_1 size is a third-party
    # figure that does not say which version it measured; no hashes published.
    "paris_1-v1.tgz": Remote(_VGG + "parisbuildings/paris_1-v1.tgz", 1_269_538_001),
    "paris_2-v1.tgz": Remote(_VGG + "parisbuildings/paris_2-v1.tgz"),
    "paris_120310.tgz": Remote(_VGG_HTTP + "parisbuildings/paris_120310.tgz"),
    # Revisited Oxford / Paris ground truth (revisitop); no hashes published.
    "gnd_roxford5k.pkl": Remote(_REVISITOP + "roxford5k/gnd_roxford5k.pkl"),
    "gnd_rparis6k.pkl": Remote(_REVISITOP + "rparis6k/gnd_rparis6k.pkl"),
    # INRIA Holidays; sizes are third-party round figures (1.1 GB, 1.6 GB).
    "jpg1.tar.gz": Remote(_HOLIDAYS + "jpg1.tar.gz", 1_100_000_000),
    "jpg2.tar.gz": Remote(_HOLIDAYS + "jpg2.tar.gz", 1_600_000_000),
    # UKBench mirror on archive.org (the original site is gone); size a third-party round figure.
    "ukbench.zip": Remote("https://archive.org/download/ukbench/ukbench.zip", 1_500_000_000),
}


class ChecksumError(ValueError):
    """A downloaded file does not have the expected hash (it has been deleted)."""


class DownloadError(ConnectionError):
    """A transfer stopped before the end; the bytes received are kept for the next call to resume."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination (or is a link or device)."""


class _ResumingDownloader:
    """pooch downloader: stream into ``part``, continuing an earlier partial transfer.

    A non-empty ``part`` is continued with ``Range: bytes=<size>-``; a server that answers 200
    (no range support) restarts it from zero, one that answers 416 (the part is as long as the
    file or longer: stale) has it deleted and downloaded again. A dropped connection is resumed
    up to ``retries`` times, then raises :class:`DownloadError` with the part kept. The complete
    part is moved onto pooch's temporary file, which pooch hash-checks and renames.
    """

    def __init__(self, part: Path, progress: bool, retries: int) -> None:
        self.part, self.progress, self.retries = part, progress, retries

    def __call__(self, url: str, output_file: str, pooch_instance: object) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._stream(url)
                break
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as e:
                if attempt == self.retries:
                    got = self.part.stat().st_size if self.part.exists() else 0
                    raise DownloadError(
                        f"download of {url} stopped after {got:,} bytes ({type(e).__name__}: {e}); they are "
                        f"kept in {self.part}: call again to resume") from e
        os.replace(self.part, output_file)

    def _stream(self, url: str) -> None:
        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as r:
            if r.status_code == 416:
                self.part.unlink()
                self._stream(url)
                return
            r.raise_for_status()
            if r.status_code != 206 or not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                offset = 0  # the server sent the whole file
            length = r.headers.get("Content-Length", "")
            total = offset + int(length) if length.isdigit() else None
            with open(self.part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=self.part.name.removesuffix(".part"), disable=not self.progress,
            ) as bar:
                for chunk in r.iter_content(chunk_size=1 << 16):  # a dropped connection loses < 64 KiB
                    f.write(chunk)
                    bar.update(len(chunk))
        size = self.part.stat().st_size
        if total is not None and size != total:
            raise requests.ConnectionError(f"received {size:,} of {total:,} bytes")


class _NoHashAdvice(logging.Filter):
    """Drops pooch's advice to paste the hash into ``pooch.retrieve``: :func:`fetch` records it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SHA256 hash of downloaded file")


def fetch(
    url: str,
    path: str | os.PathLike,
    known_hash: str | None = None,
    progress: bool = True,
    *,
    hashes: str | os.PathLike | None = None,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``path`` with pooch, unless it is already there with the right hash.

    * HTTP(S) transfers go through ``<path>.part``: an interrupted one is resumed with a
      ``Range`` request, by the next call or by up to ``retries`` automatic retries of this one
      (FTP URLs use pooch's ``FTPDownloader``, which cannot resume); a tqdm bar shows progress.
    * The file appears at ``path`` only complete and hash-checked (atomic rename). A wrong hash
      raises :class:`ChecksumError` naming the file and both hashes, and leaves neither the file
      nor a partial one.
    * ``known_hash`` is ``"md5:<hex>"`` / ``"sha256:<hex>"``. Without it, the SHA256 first seen
      for ``url`` is recorded in the JSON file ``hashes`` (default ``hashes.json`` beside ``path``,
      written atomically) and enforced on every later call: a file changed on the server raises
      :class:`ChecksumError`.

    Returns ``path``.
    """
    path = Path(path).expanduser().absolute()
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    scheme = urlparse(url).scheme
    part = path.with_name(path.name + ".part")
    if scheme in ("http", "https"):
        downloader = _ResumingDownloader(part, progress, retries)
    elif scheme == "ftp":
        downloader = pooch.FTPDownloader(progressbar=progress)
    else:
        raise ValueError(f"url must start with http://, https:// or ftp://, got {url!r}")
    hashes = Path(hashes) if hashes is not None else path.parent / "hashes.json"
    seen = json.loads(hashes.read_text()) if hashes.is_file() else {}
    expected = known_hash or seen.get(url)
    quiet = _NoHashAdvice()
    pooch.get_logger().addFilter(quiet)
    try:
        pooch.retrieve(url, expected, fname=path.name, path=path.parent, downloader=downloader, progressbar=False)
    except ValueError as e:  # pooch's hash mismatch; its message names the file and both hashes
        path.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        origin = "" if known_hash else (
            f" The expected hash is the one first seen for this URL, recorded in {hashes}: the file changed "
            "on the server. If the new file is right, delete its entry there and call again.")
        raise ChecksumError(f"{url} -> {path}: {e}{origin}") from None
    finally:
        pooch.get_logger().removeFilter(quiet)
    if expected is None:
        seen[url] = "sha256:" + pooch.file_hash(str(path))
        write_atomic(hashes, json.dumps(seen, indent=1, sort_keys=True).encode())
    return path


def _check_name(archive: Path, name: str) -> None:
    p = name.replace("\\", "/")
    if p.startswith("/") or PureWindowsPath(name).drive or ".." in PurePosixPath(p).parts:
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}, it would be written outside the destination")


def _untar(archive: Path, into: Path) -> None:
    data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tf:
        for member in tf:  # one pass: checked, then written
            _check_name(archive, member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: refusing link member {member.name!r} -> {member.linkname!r}")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{archive}: refusing special member {member.name!r} (device or FIFO)")
            tf.extract(member, into, **data_filter)


def _unzip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive}: refusing link member {info.filename!r}")
        zf.extractall(into)


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a tar (any compression) or zip ``archive`` into the new folder ``dest``; returns it.

    Each member is checked before anything is written: absolute names, drive letters and
    ``..`` components are refused, and so are links of every kind, symbolic or hard, whatever
    they point at (the benchmark archives hold none; refusing them all is simpler and safer than
    deciding which stay inside), and devices / FIFOs: :class:`UnsafeArchiveError`. Tar members
    also pass tarfile's ``"data"`` filter where Python has it (3.11.4+). Everything is unpacked
    into a temporary sibling of ``dest`` that is renamed to ``dest`` only when complete, so a
    refused or broken archive leaves nothing. ``dest`` must not exist yet.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"dest {dest} already exists: extract into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    try:
        if tarfile.is_tarfile(archive):
            _untar(archive, tmp)
        elif zipfile.is_zipfile(archive):
            _unzip(archive, tmp)
        else:
            raise ValueError(f"archive must be a tar or zip file, got {archive}")
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
