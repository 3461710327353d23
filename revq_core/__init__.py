"""revq_core: ReVQ (Quantize-then-Rectify) as a small, tested library."""
import warnings as _warnings

__version__ = "0.1.0"

# Progress bars come from tqdm.auto: widgets in Jupyter where ipywidgets is installed, text bars
# otherwise. Without ipywidgets its first import warns ("IProgress not found", with the path of the
# environment), which clutters every notebook and differs from machine to machine; import it quietly
# here, before diffusers or our modules do, and keep the text bars.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401

# glibc keeps freed memory instead of page-faulting it in again every batch (revq_core.utils.cpu_memory;
# REVQ_KEEP_FREED_MEMORY=0 turns it off).
from revq_core.utils.cpu_memory import keep_freed_memory as _keep_freed_memory  # noqa: E402

_keep_freed_memory()

# $REVQ_NUM_THREADS is applied once, here (revq_core.utils.threads.cpu_threads).
from revq_core.utils.threads import cpu_threads as _cpu_threads  # noqa: E402

if _cpu_threads() is not None:
    import torch as _torch

    _torch.set_num_threads(_cpu_threads())
