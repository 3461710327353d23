"""Settings for the whole test session: unit tests and the notebooks that ``pytest --nbval`` executes."""
import atexit
import os
import shutil
import tempfile

# Notebooks run by nbval save their figures here instead of over the committed figures/ (the kernels
# nbval starts inherit this environment). scripts/execute_notebooks.py writes to figures/ as usual.
os.environ.setdefault("REVQ_FIGURES_DIR", tempfile.mkdtemp(prefix="revq-figures-"))

# Notebooks run by nbval write their runs (checkpoints, models) to a fresh folder of this session: notebook 05
# then trains from scratch instead of resuming runs/05_train_demo/checkpoint.pt of an earlier run. Always a new
# folder, even when the shell exports REVQ_RUNS_DIR (that would resume again); removed when the session ends.
_session_runs = tempfile.mkdtemp(prefix="revq-runs-")
os.environ["REVQ_RUNS_DIR"] = _session_runs
atexit.register(shutil.rmtree, _session_runs, ignore_errors=True)
