"""Benchmarks: Oxford5k, Paris6k, revisited Oxford / Paris, INRIA Holidays, UKBench and the mini set.

Every dataset sits on disk as cirtorch / revisitop lay it out: ``root/<name>/jpg/<image>.jpg``
and ``root/<name>/gnd_<name>.pkl``, a dict with ``imlist`` (database image names, no
extension), ``qimlist`` (query image names) and ``gnd``, one dict per query: the original form
``{"ok", "junk"}`` or the revisited ``{"easy", "hard", "junk"}`` (0-based indices into
``imlist``), plus ``"bbx": [x1, y1, x2, y2]`` when the query is a crop.

- :mod:`.loading`: :func:`load` and the :class:`Dataset` it returns;
- :mod:`.groundtruth`: each benchmark's own ground-truth files, read into that form;
- :mod:`.download`: the official hosts, resumable checksummed downloads, safe extraction;
- :mod:`.other`: the mini benchmark's other collection (views of OpenCV's sample photos, to learn from);
- :mod:`.mini`: the offline mini benchmark, built from freely licensed photos (its views drawn by
  :mod:`.drawing`).

``load(name, download=True)`` fetches the original files, unpacks them and writes
``gnd_<name>.pkl`` from each dataset's own ground truth; the archives are deleted once unpacked
and ``root/hashes.json`` keeps the SHA256 first seen for files nobody publishes a hash for.
"""
from __future__ import annotations

from .groundtruth import PARIS_CORRUPT, DatasetNotFoundError, read_oxford_gt
from . import mini, other
from .loading import NAMES, Dataset, build_mini, load, resolve_root

__all__ = ["load", "Dataset", "DatasetNotFoundError", "NAMES", "build_mini", "resolve_root", "read_oxford_gt",
           "PARIS_CORRUPT"]
