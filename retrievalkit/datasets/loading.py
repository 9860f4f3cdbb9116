"""Loading a benchmark from disk (fetching it first with ``download=True``): the :class:`Dataset`
every notebook and the benchmark use."""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pooch
from PIL import Image

from . import download as dl
from .groundtruth import DatasetNotFoundError, read_gnd, write_gnd

__all__ = ["NAMES", "Dataset", "resolve_root", "load", "build_mini"]

NAMES = ("mini", "mini-other", "oxford5k", "paris6k", "roxford5k", "rparis6k", "holidays", "ukbench", "synthetic-oxford")


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
        numbers as ``x, y, w, h`` and crop too much.
        """
        box = self.bbx(i)
        with Image.open(self.queries[i]) as im:
            im = im.convert("RGB")
        return im if box is None else im.crop(tuple(box))

    def split(self, name: str) -> list[int]:
        """Indices of the database images of split ``name`` (the mini benchmark: ``"train"``, the
        only images a method may learn from, or ``"test"``)."""
        splits = self.info.get("split")
        if splits is None:
            raise ValueError(f"dataset {self.name!r} has no train / test split of its images")
        if name not in set(splits):
            raise ValueError(f"name must be one of {sorted(set(splits))}, got {name!r}")
        return [i for i, s in enumerate(splits) if s == name]

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
        # per-image lists of the pickle (mini: objects, split, views) follow the images kept
        info = {k: [v[i] for i in keep] if isinstance(v, list) and len(v) == len(self.imlist) else v
                for k, v in self.info.items()}
        return Dataset(self.name, self.root, [self.imlist[i] for i in keep], [self.qimlist[i] for i in q], gnd,
                       self.image_dir, info)


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$RETRIEVALKIT_DATA``, else ``<repo>/data/cache``
    in the course checkout (when ``<repo>/data`` exists), else pooch's per-user cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("RETRIEVALKIT_DATA"):
        return Path(os.environ["RETRIEVALKIT_DATA"]).expanduser()
    repo_data = Path(__file__).resolve().parents[2] / "data"
    if repo_data.is_dir():
        return repo_data / "cache"
    return Path(pooch.os_cache("retrievalkit"))


def build_mini(root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write the offline mini benchmark under ``root`` (:func:`retrievalkit.datasets.mini.build_mini`)."""
    from .mini import build_mini as _build

    return _build(resolve_root(root), seed)


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
        write_gnd(name, ds)
    for done in ds.glob(".*.done"):
        done.unlink()
    (ds / _INCOMPLETE).unlink()


def load(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a benchmark from ``root`` (see :func:`resolve_root`): ``"mini"``, ``"mini-other"``, ``"oxford5k"``,
    ``"paris6k"``, ``"roxford5k"``, ``"rparis6k"``, ``"holidays"`` or ``"ukbench"``.

    * mini: built offline with :func:`build_mini` when missing or outdated, whatever ``download`` says.
    * mini-other: the mini benchmark's other collection, views of OpenCV's sample photos to learn
      from (no queries; :mod:`.other`), built likewise (the photos downloaded first where Debian's
      ``opencv-doc`` is not installed).
    * oxford5k / paris6k: original ground truth from the ``gt_files`` text files, queries cropped
      to their box and kept in the database; Paris without its 20 corrupt images
      (:data:`retrievalkit.datasets.PARIS_CORRUPT`).
    * roxford5k / rparis6k: revisitop ``gnd_*.pkl`` (easy / hard / junk), Oxford / Paris images.
    * holidays: queries are the images with number % 100 == 0, their own junk
      (:func:`retrievalkit.evaluate.holidays_gnd`); images as distributed, some sideways.
    * ukbench: every image a query, ok = its group of 4; ``evaluate`` gives the N-S score.
    * synthetic-oxford: the full-size offline set of :mod:`.synthetic` (rOxford5k's form and counts),
      built on first use (minutes); a complete set already there, of any size, is used as it is.

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
    elif name == "mini-other":
        from .other import build_other

        ds = build_other(base)
        image_dir = ds / "jpg"
    elif name == "synthetic-oxford":
        from . import synthetic

        if synthetic.built_meta(ds) is None:  # any complete set of this version is used as it is
            synthetic.build_synthetic(base)
        image_dir = ds / "jpg"
    else:
        missing = _missing(name, base)
        if missing and not download:
            raise _not_found(name, base, root is not None, missing)
        if missing:
            _prepare(name, base)
        if not (ds / f"gnd_{name}.pkl").is_file():
            write_gnd(name, ds)
        image_dir = _image_dir(name, base)
    d = read_gnd(ds / f"gnd_{name}.pkl")
    extra = {k: v for k, v in d.items() if k not in ("imlist", "qimlist", "gnd")}
    data = Dataset(name, ds, list(d["imlist"]), list(d["qimlist"]), list(d["gnd"]), image_dir, extra)
    absent = [p.name for p in [*data.images, *data.queries] if not p.is_file()]
    if absent and name in ("mini", "mini-other", "synthetic-oxford"):
        raise DatasetNotFoundError(f"{len(absent)} images of the {name} set are missing from {image_dir}: "
                                   f"{absent[:5]}; delete {ds} and load it again to rebuild it")
    if absent:
        raise _not_found(name, base, root is not None, [f"{len(absent)} images in {image_dir}: {absent[:5]}"])
    return data
