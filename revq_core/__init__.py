"""revq_core: ReVQ (Quantize-then-Rectify) as a small, tested library."""
import os as _os
import warnings as _warnings

__version__ = "0.1.0"

# Progress bars come from tqdm.auto: widgets in Jupyter where ipywidgets is installed, text bars
# otherwise. Without ipywidgets its first import warns ("IProgress not found", with the path of the
# environment), which clutters every notebook and differs from machine to machine; import it quietly
# here, before diffusers or our modules do, and keep the text bars.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401


def cpu_threads(requested: int | None = None) -> int | None:
    """The CPU thread count to use: ``$REVQ_NUM_THREADS`` when set, else ``requested`` (None: torch's own
    choice). The variable is how the notebooks' checks are run with 1 and with 2 threads, and how a
    background job is kept to 1 thread; it is applied once when revq_core is imported, and wins over the
    thread counts that notebooks and ``TrainConfig.num_threads`` ask for."""
    from_environment = _os.environ.get("REVQ_NUM_THREADS", "").strip()
    if from_environment:
        if not from_environment.isdigit() or int(from_environment) < 1:
            raise ValueError(f"REVQ_NUM_THREADS must be a positive integer, got {from_environment!r}.")
        return int(from_environment)
    return requested


if cpu_threads() is not None:
    import torch as _torch

    _torch.set_num_threads(cpu_threads())
