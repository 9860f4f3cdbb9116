"""Checks that teach: run a student's function on fresh inputs and name the mistake.

Every exercise task is a :class:`Task` (see :mod:`.core`): fresh random inputs, the reference
answer (this package) and the plausible mistakes, each computing a wrong answer the way a student
might. The check cells of the notebooks call ``check_<task>(fn)``, which prints what passed or
raises :class:`CheckFailed` naming the mistake ("GeM with p=1 should equal average pooling; yours
equals max pooling"); the grader runs :func:`probe` in a sandboxed kernel and :func:`judge` outside.

One module per notebook holds its tasks: :mod:`.pooling` (1), :mod:`.measuring` (2),
:mod:`.encoding` (3), :mod:`.rmac` (4), :mod:`.crow` (5), :mod:`.cam` (6), :mod:`.postprocessing` (7),
:mod:`.finetuning` (8), :mod:`.manifolds` (9), :mod:`.benchmark` (10). :data:`TASKS` is their union, in notebook order.
"""
from __future__ import annotations

from . import benchmark, cam, crow, encoding, finetuning, manifolds, measuring, pooling, postprocessing, rmac
from .benchmark import check_benchmark_row
from .cam import check_cam_descriptor, check_class_activation_map, check_class_weighted_vector
from .core import Case, CheckFailed, Mistake, NotWritten, Result, Task, judge, probe, run_check
from .crow import check_crow_channel_weights, check_crow_spatial_weights, check_second_order
from .encoding import check_bow_tfidf, check_vlad
from .finetuning import check_contrastive_loss, check_gradient_descent, check_hard_negatives, check_triplet_loss
from .manifolds import check_knn_preservation
from .measuring import check_average_precision, check_mean_ap
from .pooling import check_gem, check_mac, check_spoc, check_window_pool
from .postprocessing import check_alpha_qe, check_pca_whiten
from .rmac import check_os_rmac, check_rmac, check_rmac_regions

TASKS: dict[str, Task] = {
    **pooling.TASKS, **measuring.TASKS, **encoding.TASKS, **rmac.TASKS, **crow.TASKS, **cam.TASKS,
    **postprocessing.TASKS, **finetuning.TASKS, **manifolds.TASKS, **benchmark.TASKS,
}

__all__ = [
    "Task", "Case", "Mistake", "Result", "TASKS", "probe", "judge", "run_check", "CheckFailed", "NotWritten",
    "check_window_pool", "check_mac", "check_spoc", "check_gem",
    "check_average_precision", "check_mean_ap",
    "check_bow_tfidf", "check_vlad",
    "check_rmac_regions", "check_rmac", "check_os_rmac",
    "check_crow_spatial_weights", "check_crow_channel_weights", "check_second_order",
    "check_class_activation_map", "check_class_weighted_vector", "check_cam_descriptor",
    "check_alpha_qe", "check_pca_whiten",
    "check_contrastive_loss", "check_triplet_loss", "check_hard_negatives", "check_gradient_descent",
    "check_knn_preservation",
    "check_benchmark_row",
]
