"""Settings for the whole test session: unit tests and the notebooks that ``pytest --nbval`` executes."""
import atexit
import os
import shutil
import tempfile

# The suite runs on two pytest-xdist workers (`-n auto --dist loadfile` in pyproject.toml; `-n 0` runs it in one
# process): a test file, or a notebook with all its cells, runs whole on one worker. On 2 cores one process left a
# core idle for most of the suite (the unit tests use one thread; Python, kernel starts and small ops do not
# scale), so each worker gets its share of the cores: 1 thread each on 2 cores. Measured on 2 cores of an AMD
# EPYC Zen 3: see README.md ("Tests").
MAX_WORKERS = 2  # the paper-scale tests peak at ~14 GB each: more workers would not fit 24 GB


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers, or one on a single core."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def threads_per_worker() -> int:
    """This process's share of the cores: all of them outside xdist, cores / workers inside a worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


if "PYTEST_XDIST_WORKER" in os.environ:
    # Before torch is imported here or in a kernel nbval starts (kernels inherit this environment); the notebooks
    # read REVQ_NUM_THREADS (revq_core.utils.threads). An exported REVQ_NUM_THREADS wins.
    _threads = os.environ.setdefault("REVQ_NUM_THREADS", str(threads_per_worker()))
    os.environ.setdefault("OMP_NUM_THREADS", _threads)
    os.environ.setdefault("MKL_NUM_THREADS", _threads)

# Notebooks run by nbval save their figures here instead of over the committed figures/ (the kernels
# nbval starts inherit this environment). scripts/execute_notebooks.py writes to figures/ as usual.
os.environ.setdefault("REVQ_FIGURES_DIR", tempfile.mkdtemp(prefix="revq-figures-"))

# Notebooks run by nbval write their runs (checkpoints, models) to a fresh folder of this session: notebook 05
# then trains from scratch instead of resuming runs/05_train_demo/checkpoint.pt of an earlier run. Always a new
# folder, even when the shell exports REVQ_RUNS_DIR (that would resume again); removed when the session ends.
_session_runs = tempfile.mkdtemp(prefix="revq-runs-")
os.environ["REVQ_RUNS_DIR"] = _session_runs
atexit.register(shutil.rmtree, _session_runs, ignore_errors=True)
