"""A generated class for the classroom tests (and the class report of issue 18): each student's
exercise-1 notebook with a mix of the checks' named mistakes, and the file names Canvas and Moodle
give their downloads. Built from ``solutions/01_pooling.ipynb`` at test time (see test_grading.py
for why no submission is kept as an .ipynb file)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]

GEM_MAX = "def gem(x, p=3.0, eps=1e-6):\n    return x.amax(dim=(-2, -1))\n"
GEM_NO_ROOT = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1))\n"
GEM_SUM = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).sum(dim=(-2, -1)).pow(1 / p)\n"
GEM_NO_CLAMP = "def gem(x, p=3.0, eps=1e-6):\n    return x.pow(p).mean(dim=(-2, -1)).pow(1 / p)\n"
MAC_AVG = "def mac(x):\n    return x.mean(dim=(-2, -1))\n"
MAC_ABS = "def mac(x):\n    return x.abs().amax(dim=(-2, -1))\n"
SPOC_SUM = "def spoc(x):\n    return x.sum(dim=(-2, -1))\n"
SPOC_NO_TWO = ("def spoc(x):\n    H, W = x.shape[-2:]\n    s = min(H, W) / 6\n"
               "    i = torch.arange(H, dtype=x.dtype)[:, None] - (H - 1) / 2\n"
               "    j = torch.arange(W, dtype=x.dtype)[None, :] - (W - 1) / 2\n"
               "    return (x * torch.exp(-(i**2 + j**2) / s**2)).sum(dim=(-2, -1))\n")
WINDOW_MAX = ("def window_pool(x, kind):\n    H, W = x.shape\n"
              "    return x[: H // 2 * 2, : W // 2 * 2].reshape(H // 2, 2, W // 2, 2).amax(dim=(1, 3))\n")
GEM_RAISES = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps) ** p.mean()\n"
TODO = "def mac(x):\n    raise NotImplementedError()\n"

# (full name, Canvas lastfirst, user / participant id, the student's changes to the solution)
CLASS = [
    ("Ann Lee", "leeann", 1001, {}),
    ("Bo Chen", "chenbo", 1002, {"gem": GEM_MAX}),
    ("Cara Diaz", "diazcara", 1003, {"gem": GEM_MAX, "mac": MAC_AVG}),
    ("Dev Patel", "pateldev", 1004, {"gem": GEM_NO_ROOT}),
    ("Eli Moss", "mosseli", 1005, {}),
    ("Fay Ng", "ngfay", 1006, {"spoc": SPOC_SUM}),
    ("Gus Ortiz", "ortizgus", 1007, {"gem": GEM_MAX, "spoc": SPOC_SUM}),
    ("Hana Sato", "satohana", 1008, {"mac": MAC_AVG}),
    ("Ivo Kral", "kralivo", 1009, {"gem": GEM_SUM}),
    ("Jo Park", "parkjo", 1010, {}),
    ("Kim Vo", "vokim", 1011, {"gem": GEM_NO_ROOT, "window_pool": WINDOW_MAX}),
    ("Lea Roth", "rothlea", 1012, {"spoc": SPOC_NO_TWO}),
    ("Max Beck", "beckmax", 1013, {"gem": GEM_MAX}),
    ("Nia Obi", "obinia", 1014, {"mac": MAC_ABS}),
    ("Oli Hart", "hartoli", 1015, {}),
    ("Pia Berg", "bergpia", 1016, {"gem": GEM_NO_CLAMP}),
    ("Quin Ito", "itoquin", 1017, {"mac": TODO}),
    ("Rui Sa", "sarui", 1018, {"gem": GEM_RAISES}),
    ("Sol Rey", "reysol", 1019, {"spoc": SPOC_SUM, "mac": MAC_AVG}),
    ("Tom Wu", "wutom", 1020, {}),
    ("Uma Das", "dasuma", 1021, {"gem": GEM_NO_ROOT}),
    ("Vic Hale", "halevic", 1022, {"window_pool": WINDOW_MAX}),
]


def notebook(changes: dict[str, str]) -> str:
    """The solution of exercise 1 with the cells of ``changes`` (grade id -> source) replaced."""
    nb = nbformat.read(ROOT / "solutions" / "01_pooling.ipynb", as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in changes:
            cell.source = changes[gid]
    return nbformat.writes(nb)


def canvas_name(lastfirst: str, user: int, n: int, file: str, late: bool = False) -> str:
    """Canvas's name for a downloaded submission file: ``<lastfirst>[_LATE]_<userid>_<attachmentid>_<file>``."""
    return f"{lastfirst}{'_LATE' if late else ''}_{user}_{90000 + n}_{file}"


def moodle_name(full_name: str, participant: int) -> str:
    """Moodle's folder for a student's files: ``<Full Name>_<participant id>_assignsubmission_file_``."""
    return f"{full_name}_{participant}_assignsubmission_file_"


def write_canvas_zip(path: Path, students=CLASS) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n, (_, lastfirst, user, changes) in enumerate(students):
            zf.writestr(canvas_name(lastfirst, user, n, "01_pooling.ipynb", late=n % 7 == 3), notebook(changes))
    return path


def write_moodle_zip(path: Path, students=CLASS) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for full, _, participant, changes in students:
            zf.writestr(f"{moodle_name(full, participant)}/01_pooling.ipynb", notebook(changes))
    return path
