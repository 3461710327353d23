"""Settings for the whole test session: unit tests and the notebooks that ``pytest --nbval`` executes."""
import os
import tempfile

# Notebooks run by nbval save their figures here instead of over the committed figures/ (the kernels
# nbval starts inherit this environment). scripts/execute_notebooks.py writes to figures/ as usual.
os.environ.setdefault("REVQ_FIGURES_DIR", tempfile.mkdtemp(prefix="revq-figures-"))
