"""The published numbers the benchmark puts beside its rows, each with its source (:data:`PAPERS`)."""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Paper", "PAPERS", "PUBLISHED", "REFERENCES"]


class Paper(NamedTuple):
    """A source: ``cite`` names it in a row, ``reference`` in full; ``str()`` is ``"cite, link"``."""

    cite: str
    reference: str
    link: str

    def __str__(self) -> str:
        return f"{self.cite}, {self.link}"


_SCHOLAR = "https://scholar.google.com/scholar?q="
PAPERS = {
    "Tolias": Paper("Tolias et al., ICLR 2016", 'G. Tolias, R. Sicre and H. Jégou, "Particular Object Retrieval '
                    'with Integral Max-Pooling of CNN Activations"', "https://arxiv.org/abs/1511.05879"),
    "Babenko": Paper("Babenko & Lempitsky, ICCV 2015", 'A. Babenko and V. Lempitsky, "Aggregating Local Deep '
                     'Features for Image Retrieval"', "https://arxiv.org/abs/1510.07493"),
    "Radenović": Paper("Radenović et al., IEEE TPAMI 2018", 'F. Radenović, G. Tolias and O. Chum, "Fine-tuning CNN '
                       'Image Retrieval with No Human Annotation"', "https://arxiv.org/abs/1711.02512"),
    "Kalantidis": Paper("Kalantidis et al., ECCV Workshops 2016", 'Y. Kalantidis, C. Mellina and S. Osindero, '
                        '"Cross-dimensional Weighting for Aggregated Deep Convolutional Features"',
                        "https://arxiv.org/abs/1512.04065"),
    "Seddati": Paper("Seddati et al., ICCV Workshops 2017", 'O. Seddati, S. Dupont, S. Mahmoudi and M. Parian, '
                     '"Towards Good Practices for Image Retrieval Based on CNN Features"',
                     f"{_SCHOLAR}%22Towards+Good+Practices+for+Image+Retrieval+Based+on+CNN+Features%22"),
    "Jimenez": Paper("Jimenez et al., BMVC 2017", 'A. Jimenez, J. M. Alvarez and X. Giro-i-Nieto, "Class-Weighted '
                     'Convolutional Features for Visual Instance Search"', "https://arxiv.org/abs/1707.02581"),
    "Jeong": Paper("Jeong et al., IEEE ICASSP 2017", 'D.-j. Jeong, S. Choo, W. Seo and N. I. Cho, "Regional Deep '
                   'Feature Aggregation for Image Retrieval"',
                   f"{_SCHOLAR}%22Regional+deep+feature+aggregation+for+image+retrieval%22"),
    "Jégou": Paper("Jégou et al., CVPR 2010", 'H. Jégou, M. Douze, C. Schmid and P. Pérez, "Aggregating Local '
                   'Descriptors into a Compact Image Representation"',
                   f"{_SCHOLAR}%22Aggregating+local+descriptors+into+a+compact+image+representation%22"),
    "Revisited": Paper("Radenović et al., CVPR 2018", 'F. Radenović, A. Iscen, G. Tolias, Y. Avrithis and O. Chum, '
                       '"Revisiting Oxford and Paris: Large-Scale Image Retrieval Benchmarking"',
                       "https://arxiv.org/abs/1803.11285"),
    "cirtorch": Paper("cirtorch, the code of Radenović et al., IEEE TPAMI 2018", "F. Radenović, CNN Image Retrieval "
                      "in PyTorch", "https://github.com/filipradenovic/cnnimageretrieval-pytorch"),
}
"""The sources of the methods and of :data:`PUBLISHED`, by first author (or name)."""


def _tabulated(paper: Paper) -> str:
    return f"{paper}; tabulated by {'; '.join(PAPERS[p].cite for p in ('Seddati', 'Jimenez', 'Jeong'))}"


_SPOC, _CROW, _RMAC = (_tabulated(PAPERS[p]) for p in ("Babenko", "Kalantidis", "Tolias"))
_CROW_QE = f"512-D, PCAw + average QE k=10 (not alpha-QE); {PAPERS['Kalantidis']}; tabulated by {PAPERS['Jeong'].cite}"
_CAM = {other: f"64 CAMs, each class vector PCA-whitened (512, on {other}) before the sum; {PAPERS['Jimenez']}"
        for other in ("Oxford", "Paris")}
# Tolias et al. PCA-whiten each regional vector before the sum; the benchmark's +PCAw whitens the sum
_RMAC_PCAW = "each region PCA-whitened before the sum (ours: the sum after)"
_OS_RMAC = f"ResNet50, 2048-D, 3 resolutions fused (M-R l_j), no whitening, table 4 of {PAPERS['Seddati']}"
PUBLISHED: dict[tuple[str, str, str, str], tuple[dict[str, float], str]] = {
    ("oxford5k", "CroW", "+PCAw", "vgg16"): ({"old": 68.2}, f"512-D, PCAw on Paris; {_CROW}"),
    ("paris6k", "CroW", "+PCAw", "vgg16"): ({"old": 79.6}, f"512-D, PCAw on Oxford; {_CROW}"),
}
"""Published mAP (%) in the benchmark's own real-mode setting (VGG16, images at 1024, 512-D, PCA-whitening
learnt on the other dataset), by (dataset, method, variant, backbone) -> ({protocol: mAP}, setting and
source): the only numbers put beside our rows. No source reports an off-the-shelf MAC / SPoC / GeM / CroW /
CAM / VLAD on rOxford5k / rParis6k (``PAPERS["Revisited"]`` reports fine-tuned GeM, R-MAC and NetVLAD), so
those rows stay blank."""

REFERENCES: dict[tuple[str, str, str, str], tuple[dict[str, float], str]] = {
    ("oxford5k", "SPoC", "+PCAw", "vgg16"): ({"old": 53.1}, f"256-D (ours: 512), PCAw; {_SPOC}"),
    ("oxford5k", "R-MAC", "+PCAw", "vgg16"): ({"old": 66.9}, f"512-D, {_RMAC_PCAW} on Paris; {_RMAC}"),
    ("paris6k", "R-MAC", "+PCAw", "vgg16"): ({"old": 83.0}, f"512-D, {_RMAC_PCAW} on Oxford; {_RMAC}"),
    ("oxford5k", "CroW", "+PCAw+αQE", "vgg16"): ({"old": 72.2}, _CROW_QE),
    ("paris6k", "CroW", "+PCAw+αQE", "vgg16"): ({"old": 85.5}, _CROW_QE),
    ("oxford5k", "CAM", "+PCAw", "vgg16"): ({"old": 71.2}, _CAM["Paris"]),
    ("paris6k", "CAM", "+PCAw", "vgg16"): ({"old": 80.5}, _CAM["Oxford"]),
    ("oxford5k", "CAM", "+PCAw", "resnet50"): ({"old": 69.9}, _CAM["Paris"]),
    ("paris6k", "CAM", "+PCAw", "resnet50"): ({"old": 80.4}, _CAM["Oxford"]),
    ("oxford5k", "OS-RMAC", "raw", "resnet50"): ({"old": 67.77}, _OS_RMAC),
    ("paris6k", "OS-RMAC", "raw", "resnet50"): ({"old": 82.0}, _OS_RMAC),
}
"""Published numbers under another setting (named in each), references only: never put beside our rows."""
