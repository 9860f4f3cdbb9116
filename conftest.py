"""Shared by every test and notebook the suite runs (tests/, lectures/, solutions/)."""
import os

# Under pytest-xdist each worker, and every notebook kernel or subprocess it starts, gets its share of
# the cores. Left at their default, torch's and the BLAS's OpenMP threads in every worker spin against
# one another: on two cores the benchmark's tests and lectures 7 and 10 ran 5 times slower. Set here,
# at import, because the BLAS reads these variables once, when numpy or torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)
