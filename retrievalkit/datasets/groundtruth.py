"""Ground-truth formats: the Oxford / Paris ``gt_files``, INRIA Holidays' image numbers, UKBench's
groups of 4, and the cirtorch / revisitop ``gnd_<name>.pkl`` every dataset is stored as."""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from .._atomic import write_atomic
from ..evaluate import holidays_gnd, original_protocol

__all__ = ["PARIS_CORRUPT", "DatasetNotFoundError", "read_oxford_gt", "write_gnd", "read_gnd"]

PARIS_CORRUPT = frozenset(
    f"paris_{n}" for n in (
        "louvre_000136", "louvre_000146", "moulinrouge_000422", "museedorsay_001059", "notredame_000188",
        "pantheon_000284", "pantheon_000960", "pantheon_000974", "pompidou_000195", "pompidou_000196",
        "pompidou_000201", "pompidou_000467", "pompidou_000640", "sacrecoeur_000299", "sacrecoeur_000330",
        "sacrecoeur_000353", "triomphe_000662", "triomphe_000833", "triomphe_000863", "triomphe_000867",
    )
)
"""The 20 Paris images that do not decode (6,412 files, 6,392 used, as cirtorch's image list)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says what is missing, where, and how to fetch it."""


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


def write_gnd(name: str, ds: Path) -> None:
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
    write_atomic(ds / f"gnd_{name}.pkl", pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))


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


def read_gnd(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        d = _GroundTruthUnpickler(f).load()
    if not isinstance(d, dict) or not {"imlist", "qimlist", "gnd"} <= d.keys():
        raise ValueError(f"{path} must hold a dict with 'imlist', 'qimlist' and 'gnd'")
    if len(d["gnd"]) != len(d["qimlist"]):
        raise ValueError(f"{path}: 'gnd' has {len(d['gnd'])} entries for {len(d['qimlist'])} queries")
    return d
