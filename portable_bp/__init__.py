"""portable_bp: exact, readable backpropagation written once on the Python Array API.

The same code runs on NumPy (CPU), CuPy (CUDA GPUs), PyTorch, JAX and array-api-strict.
The equations E1–E13 referred to in docstrings are those of docs/derivation.md.
"""

from . import backends
from .gradcheck import gradcheck
from .network import Network, load

__version__ = "0.1.0"
__all__ = ["Network", "backends", "gradcheck", "load", "optim", "datasets", "train", "ops", "step",
           "distributed", "sklearn", "__version__"]


def __getattr__(name):
    # the rest imports lazily: ``import portable_bp`` stays light (sklearn needs scikit-learn)
    if name in ("optim", "datasets", "checkpoint", "train", "ops", "step", "distributed", "sklearn"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'portable_bp' has no attribute {name!r}")
