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
