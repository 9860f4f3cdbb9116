"""Shared by every test and notebook the suite runs (tests/, lectures/, solutions/).

Before the notebooks run (nbval, in parallel workers), the controller process builds the mini benchmark and
caches the Lite0 feature maps the lectures use, once, so that no two notebooks extract the same maps at the same
time and each notebook runs within its budget. mini-other is left to the lectures that draw it (4, 5, 7, 10), so
that the suite still runs their first, cold-cache path: prebuilt, it saved no time (measured on 2 cores).
"""
import os

# (size, layer) of every cached map set the lectures read of mini: lecture 2 onwards use the default,
# lecture 4 adds the seed paper's two smaller resolutions and the penultimate layer.
LECTURE_MAPS = [(None, "last"), (244, "last"), (168, "last"), (None, "penultimate")]

# Under pytest-xdist each worker, and every notebook kernel or subprocess it starts, gets its share of
# the cores. Left at their default, torch's and the BLAS's OpenMP threads in every worker spin against
# one another: on two cores the benchmark's tests and lectures 7 and 10 ran 5 times slower. Set here,
# at import, because the BLAS reads these variables once, when numpy or torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it already
        return
    paths = [str(a) for a in config.args] or ["."]
    if not any("lectures" in p or "solutions" in p or p in (".", str(config.rootpath)) for p in paths):
        return
    import retrievalkit as rk

    net = rk.models.backbone()
    ds = rk.datasets.load("mini")
    for size, layer in LECTURE_MAPS:
        rk.extract.dataset_maps(net, ds, size=size, layer=layer, progress=False)
