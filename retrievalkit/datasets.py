"""Benchmarks: Oxford5k, Paris6k, revisited Oxford / Paris, INRIA Holidays, UKBench and the mini set.

Every dataset sits on disk as cirtorch / revisitop lay it out: ``root/<name>/jpg/<image>.jpg``
and ``root/<name>/gnd_<name>.pkl``, a dict with ``imlist`` (database image names, no
extension), ``qimlist`` (query image names) and ``gnd``, one dict per query: the original form
``{"ok", "junk"}`` or the revisited ``{"easy", "hard", "junk"}`` (0-based indices into
``imlist``), plus ``"bbx": [x1, y1, x2, y2]`` when the query is a crop.
``load(name, download=True)`` fetches the original files (URLs in :mod:`retrievalkit.download`),
unpacks them and writes ``gnd_<name>.pkl`` from each dataset's own ground truth: the Oxford /
Paris ``gt_files`` text files, the revisitop pickles, Holidays' image numbers, UKBench's groups
of 4. The archives are deleted once unpacked; ``root/hashes.json`` keeps the SHA256 first seen
for files nobody publishes a hash for.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pooch
from PIL import Image

from . import download as dl
from .evaluate import holidays_gnd, original_protocol

__all__ = [
    "NAMES",
    "PARIS_CORRUPT",
    "Dataset",
    "DatasetNotFoundError",
    "resolve_root",
    "load",
    "build_mini",
    "read_oxford_gt",
]

NAMES = ("mini", "oxford5k", "paris6k", "roxford5k", "rparis6k", "holidays", "ukbench")

PARIS_CORRUPT = frozenset(
    f"paris_{n}" for n in (
        "louvre_000136", "louvre_000146", "moulinrouge_000422", "museedorsay_001059", "notredame_000188",
        "pantheon_000284", "pantheon_000960", "pantheon_000974", "pompidou_000195", "pompidou_000196",
        "pompidou_000201", "pompidou_000467", "pompidou_000640", "sacrecoeur_000299", "sacrecoeur_000330",
        "sacrecoeur_000353", "triomphe_000662", "triomphe_000833", "triomphe_000863", "triomphe_000867",
    )
)
"""The 20 Paris images that do not decode (6,412 files, 6,392 used; REFERENCE.md section 10)."""

# (file in download.REGISTRY, folder of root/<name> it goes to, the archive members kept).
# A source with no folder is the ground-truth pickle itself, fetched to root/<name>/<file>.
_SOURCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "oxford5k": (("oxbuild_images-v1.tgz", "jpg", "*.jpg"), ("gt_files_170407.tgz", "gt_files", "*.txt")),
    "paris6k": (("paris_1-v1.tgz", "jpg", "*.jpg"), ("paris_2-v1.tgz", "jpg", "*.jpg"),
                ("paris_120310.tgz", "gt_files", "*.txt")),
    "roxford5k": (("gnd_roxford5k.pkl", "", ""),),
    "rparis6k": (("gnd_rparis6k.pkl", "", ""),),
    "holidays": (("jpg1.tar.gz", "jpg", "*.jpg"), ("jpg2.tar.gz", "jpg", "*.jpg")),
    "ukbench": (("ukbench.zip", "jpg", "full/*.jpg"),),  # the zip also holds thumbnails/
}
_BASE = {"roxford5k": "oxford5k", "rparis6k": "paris6k"}  # whose images the revisited sets use
_INCOMPLETE = ".incomplete"  # in root/<name> while download=True is at work


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says what is missing, where, and how to fetch it."""


@dataclass(repr=False)
class Dataset:
    """A benchmark on disk: image names, ground truth, and the paths of its JPEGs.

    ``images`` are the database images in ``imlist`` order and ``queries`` the query images
    (uncropped), both ``image_dir / "<name>.jpg"``; ``root`` is the dataset's folder. The
    revisited sets keep their pickle in their own folder and read Oxford's / Paris' images.
    """

    name: str
    root: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict[str, Any]]
    image_dir: Path
    info: dict[str, Any] = field(default_factory=dict)  # any further keys of the pickle (mini: objects, split...)
    images: list[Path] = field(init=False)
    queries: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.images = [self.image_dir / f"{n}.jpg" for n in self.imlist]
        self.queries = [self.image_dir / f"{n}.jpg" for n in self.qimlist]

    def __len__(self) -> int:
        return len(self.imlist)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self.imlist)} images, {len(self.qimlist)} queries, root='{self.root}')"

    def bbx(self, i: int) -> list[float] | None:
        """Query ``i``'s box ``[x1, y1, x2, y2]`` (0-based pixels), or None for a whole-image query."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.qimlist):
            raise ValueError(f"i must be a query index in [0, {len(self.qimlist)}), got {i!r}")
        box = self.gnd[i].get("bbx")
        return None if box is None else [float(v) for v in box]

    def query_image(self, i: int) -> Image.Image:
        """Query ``i`` as an RGB PIL image, cropped to ``bbx(i)`` when it has one.

        The box is PIL's crop box ``(x1, y1, x2, y2)`` (coordinates rounded by PIL, as cirtorch
        crops), so the crop is ``x2 - x1`` by ``y2 - y1`` pixels; yahoo/crow read the same
        numbers as ``x, y, w, h`` and crop too much (REFERENCE.md surprise 10).
        """
        box = self.bbx(i)
        with Image.open(self.queries[i]) as im:
            im = im.convert("RGB")
        return im if box is None else im.crop(tuple(box))


    def subset(self, queries: Sequence[int], images: Sequence[int]) -> "Dataset":
        """A smaller benchmark: the given queries against the given database images.

        Ground-truth indices are renumbered into the new image list and entries of dropped images
        removed, so the protocol is unchanged on what remains (for quick experiments).
        """
        q = [int(i) for i in queries]
        keep = list(dict.fromkeys(int(i) for i in images))
        if not q or not keep or not all(0 <= i < len(self.qimlist) for i in q) or not all(0 <= i < len(self.imlist) for i in keep):
            raise ValueError(f"queries and images must be non-empty lists of indices into the {len(self.qimlist)} queries "
                             f"and {len(self.imlist)} images")
        new = {old: j for j, old in enumerate(keep)}
        gnd = [{k: ([new[i] for i in v if i in new] if k != "bbx" else v) for k, v in self.gnd[i].items()} for i in q]
        return Dataset(self.name, self.root, [self.imlist[i] for i in keep], [self.qimlist[i] for i in q], gnd,
                       self.image_dir, dict(self.info))


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$RETRIEVALKIT_DATA``, else ``<repo>/data/cache``
    in the course checkout (when ``<repo>/data`` exists), else pooch's per-user cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("RETRIEVALKIT_DATA"):
        return Path(os.environ["RETRIEVALKIT_DATA"]).expanduser()
    repo_data = Path(__file__).resolve().parents[1] / "data"
    if repo_data.is_dir():
        return repo_data / "cache"
    return Path(pooch.os_cache("retrievalkit"))


def build_mini(root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write the offline mini benchmark under ``root`` (:func:`retrievalkit.mini.build_mini`)."""
    from .mini import build_mini as _build

    return _build(resolve_root(root), seed)


def _read_list(path: Path) -> list[str]:
    """Image names, one a line, first occurrence kept (the Oxford lists repeat some)."""
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {path} is missing")
    return list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))


def read_oxford_gt(gt_dir: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """Read Oxford / Paris ``gt_files``: ``(qimlist, gnd)`` with image names, not indices.

    Each query ``<landmark>_<k>`` has four files: ``_query.txt`` holds ``<image> x1 y1 x2 y2``
    (Oxford writes the image as ``oxc1_<image>``, the prefix is stripped; Paris has none) and
    ``_good.txt``, ``_ok.txt``, ``_junk.txt`` list image names, one a line (repeats dropped).
    Queries come sorted by landmark then ``k``; ``gnd[i]`` is ``{"bbx", "good", "ok", "junk"}``.
    """
    gt_dir = Path(gt_dir)
    keys = [p.name[: -len("_query.txt")] for p in gt_dir.glob("*_query.txt")]
    if not keys:
        raise FileNotFoundError(f"no <landmark>_<k>_query.txt files in {gt_dir}")
    keys.sort(key=lambda k: (k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1])))
    qimlist, gnd = [], []
    for key in keys:
        fields = (gt_dir / f"{key}_query.txt").read_text().split()
        if len(fields) != 5:
            raise ValueError(f"{gt_dir / (key + '_query.txt')} must hold '<image> x1 y1 x2 y2', got {fields}")
        qimlist.append(fields[0].removeprefix("oxc1_"))
        g = {"bbx": [float(v) for v in fields[1:]]}
        g.update({kind: _read_list(gt_dir / f"{key}_{kind}.txt") for kind in ("good", "ok", "junk")})
        gnd.append(g)
    return qimlist, gnd


def _oxford_gnd(ds: Path, imlist: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """gt_files -> ``(qimlist, gnd)`` in the original form: ok = good ∪ ok, junk (indices)."""
    qimlist, named = read_oxford_gt(ds / "gt_files")
    index = {n: i for i, n in enumerate(imlist)}
    absent = [q for q in qimlist if q not in index]
    if absent:
        raise DatasetNotFoundError(f"query images {absent} of {ds / 'gt_files'} are not in {ds / 'jpg'}")
    unknown = sorted({n for g in named for k in ("good", "ok", "junk") for n in g[k]} - index.keys() - PARIS_CORRUPT)
    if unknown:
        warnings.warn(f"{len(unknown)} images of {ds / 'gt_files'} are not in {ds / 'jpg'} and are left out of "
                      f"the ground truth: {unknown[:10]}", UserWarning, stacklevel=3)
    gnd = [{"bbx": g["bbx"], **{k: [index[n] for n in g[k] if n in index] for k in ("good", "ok", "junk")}}
           for g in named]
    return qimlist, original_protocol(gnd)


def _holidays_gnd(imlist: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    bad = [n for n in imlist if not re.fullmatch(r"\d{6}", n)]
    if bad:
        raise ValueError(f"Holidays images must be named <6 digits>.jpg, got {bad[:5]}")
    queries, gnd = holidays_gnd([int(n) for n in imlist])
    return [imlist[q] for q in queries], gnd


def _ukbench_gnd(imlist: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Every image is a query; its positives are its group of 4 (itself included, as N-S counts)."""
    numbers = [int(n[7:]) if re.fullmatch(r"ukbench\d{5}", n) else -1 for n in imlist]
    if numbers != list(range(len(imlist))) or len(imlist) % 4:
        raise ValueError(f"UKBench images must be ukbench00000.jpg, ukbench00001.jpg, ... in groups of 4, "
                         f"got {len(imlist)} images starting {imlist[:4]}")
    return list(imlist), [{"ok": list(range(i - i % 4, i - i % 4 + 4)), "junk": []} for i in range(len(imlist))]


def _write_gnd(name: str, ds: Path) -> None:
    """Write ``gnd_<name>.pkl`` from the images in ``jpg/`` and the dataset's own ground truth.

    Paris: the 20 undecodable images of :data:`PARIS_CORRUPT` are left out of ``imlist`` (and of
    the ground truth), as cirtorch's 6,392-image list does; their files may stay in ``jpg/``.
    """
    imlist = sorted(p.stem for p in (ds / "jpg").glob("*.jpg"))
    if name == "paris6k":
        imlist = [n for n in imlist if n not in PARIS_CORRUPT]
    if name in ("oxford5k", "paris6k"):
        qimlist, gnd = _oxford_gnd(ds, imlist)
    elif name == "holidays":
        qimlist, gnd = _holidays_gnd(imlist)
    else:
        qimlist, gnd = _ukbench_gnd(imlist)
    dl.write_atomic(ds / f"gnd_{name}.pkl", pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))


class _GroundTruthUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: no code from a downloaded file."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # encode: bytes in protocol 2

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"ground-truth pickles may hold only lists, dicts, numbers and numpy "
                                         f"arrays, this one asks for {module}.{name}")
        return super().find_class(module, name)


def _read_gnd(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        d = _GroundTruthUnpickler(f).load()
    if not isinstance(d, dict) or not {"imlist", "qimlist", "gnd"} <= d.keys():
        raise ValueError(f"{path} must hold a dict with 'imlist', 'qimlist' and 'gnd'")
    if len(d["gnd"]) != len(d["qimlist"]):
        raise ValueError(f"{path}: 'gnd' has {len(d['gnd'])} entries for {len(d['qimlist'])} queries")
    return d


def _image_dir(name: str, base: Path) -> Path:
    """``jpg/`` of the dataset, or of the one whose images it uses (rOxford, rParis)."""
    own = base / name / "jpg"
    return own if name not in _BASE or own.is_dir() else base / _BASE[name] / "jpg"


def _images_missing(name: str, base: Path) -> str | None:
    """Why the images of ``name`` cannot be read, in words, or None."""
    image_dir = _image_dir(name, base)
    if (image_dir.parent / _INCOMPLETE).exists():
        return f"an earlier download into {image_dir.parent} did not finish"
    return None if any(image_dir.glob("*.jpg")) else f"the images, {image_dir}/<image>.jpg"


def _missing(name: str, base: Path) -> list[str]:
    """What keeps ``name`` from loading, in words (empty when it can)."""
    ds = base / name
    if (ds / _INCOMPLETE).exists():
        return [f"an earlier download into {ds} did not finish"]
    missing = [m for m in (_images_missing(name, base),) if m]
    gt = ds / f"gnd_{name}.pkl"
    if name in _BASE and not gt.is_file():
        missing.append(f"the ground truth, {gt}")
    if name in ("oxford5k", "paris6k") and not gt.is_file() and not any((ds / "gt_files").glob("*_query.txt")):
        missing.append(f"the ground truth, {gt} or the text files {ds / 'gt_files'}/<landmark>_<k>_query.txt ...")
    return missing


def _not_found(name: str, base: Path, root_given: bool, missing: Sequence[str]) -> DatasetNotFoundError:
    files = [f for f, _, _ in _SOURCES[name]]
    if name in _BASE and _images_missing(name, base):
        files += [f for f, _, _ in _SOURCES[_BASE[name]]]
    remotes = [dl.REGISTRY[f] for f in files]
    size = f"about {sum(r.size or 0 for r in remotes) / 1e9:.1f} GB"
    unknown = [f for f, r in zip(files, remotes) if r.size is None]
    if unknown:
        size += f" plus {', '.join(unknown)} of unknown size"
    root_arg = f", root={str(base)!r}" if root_given else ""
    lines = [
        f"Dataset {name!r} is not in {base}:",
        *(f"  missing {m}" for m in missing),
        f"Download it ({size}) with",
        f'    retrievalkit.datasets.load("{name}"{root_arg}, download=True)',
        "which fetches",
        *(f"    {r.url}" for r in remotes),
        f"and unpacks them into {base}. Or put the files there yourself ({_image_dir(name, base)}/<image>.jpg "
        f"and {base / name}/gnd_{name}.pkl), or point root= or $RETRIEVALKIT_DATA at a folder that has them.",
    ]
    return DatasetNotFoundError("\n".join(lines))


def _install(archive: Path, ds: Path, into: str, pattern: str) -> None:
    """Unpack ``archive`` and move its members matching ``pattern`` into ``ds / into``, flattened."""
    staging = ds / f".{archive.name}.unpacked"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted earlier run
    dl.extract(archive, staging)
    target = ds / into
    target.mkdir(exist_ok=True)
    moved: set[str] = set()
    for f in sorted(staging.rglob("*")):
        if f.is_file() and f.relative_to(staging).match(pattern):
            if f.name in moved:
                raise ValueError(f"{archive} holds two files named {f.name}")
            moved.add(f.name)
            os.replace(f, target / f.name)
    shutil.rmtree(staging)


def _prepare(name: str, base: Path) -> None:
    """Download, unpack and index ``name`` (and the dataset whose images it uses)."""
    if name in _BASE and _images_missing(name, base):
        _prepare(_BASE[name], base)
    ds = base / name
    ds.mkdir(parents=True, exist_ok=True)
    (ds / _INCOMPLETE).touch()
    for file, into, pattern in _SOURCES[name]:
        done = ds / f".{file}.done"
        if done.exists():  # unpacked by an earlier, interrupted call
            continue
        remote = dl.REGISTRY[file]
        if into:
            archive = dl.fetch(remote.url, base / "downloads" / file, remote.known_hash, hashes=base / "hashes.json")
            _install(archive, ds, into, pattern)
            archive.unlink()
        else:
            dl.fetch(remote.url, ds / file, remote.known_hash, hashes=base / "hashes.json")
        done.touch()
    if name not in _BASE:
        _write_gnd(name, ds)
    for done in ds.glob(".*.done"):
        done.unlink()
    (ds / _INCOMPLETE).unlink()


def load(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a benchmark from ``root`` (see :func:`resolve_root`): ``"mini"``, ``"oxford5k"``,
    ``"paris6k"``, ``"roxford5k"``, ``"rparis6k"``, ``"holidays"`` or ``"ukbench"``.

    * mini: built offline with :func:`build_mini` when missing or outdated, whatever ``download`` says.
    * oxford5k / paris6k: original ground truth from the ``gt_files`` text files, queries cropped
      to their box and kept in the database; Paris without its 20 corrupt images
      (:data:`PARIS_CORRUPT`).
    * roxford5k / rparis6k: revisitop ``gnd_*.pkl`` (easy / hard / junk), Oxford / Paris images.
    * holidays: queries are the images with number % 100 == 0, their own junk
      (:func:`retrievalkit.evaluate.holidays_gnd`); images as distributed, some sideways.
    * ukbench: every image a query, ok = its group of 4; ``evaluate`` gives the N-S score.

    A missing dataset raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) saying what
    is missing, where, and how to fetch it; ``download=True`` fetches it (resumable, hash-checked).
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
    base = resolve_root(root)
    ds = base / name
    if name == "mini":
        ds = build_mini(base)  # returns at once when the set of this seed and version is there
        image_dir = ds / "jpg"
    else:
        missing = _missing(name, base)
        if missing and not download:
            raise _not_found(name, base, root is not None, missing)
        if missing:
            _prepare(name, base)
        if not (ds / f"gnd_{name}.pkl").is_file():
            _write_gnd(name, ds)
        image_dir = _image_dir(name, base)
    d = _read_gnd(ds / f"gnd_{name}.pkl")
    extra = {k: v for k, v in d.items() if k not in ("imlist", "qimlist", "gnd")}
    data = Dataset(name, ds, list(d["imlist"]), list(d["qimlist"]), list(d["gnd"]), image_dir, extra)
    absent = [p.name for p in [*data.images, *data.queries] if not p.is_file()]
    if absent and name == "mini":
        raise DatasetNotFoundError(f"{len(absent)} images of the mini set are missing from {image_dir}: "
                                   f"{absent[:5]}; delete {ds} and load it again to rebuild it")
    if absent:
        raise _not_found(name, base, root is not None, [f"{len(absent)} images in {image_dir}: {absent[:5]}"])
    return data
