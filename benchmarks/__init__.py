"""Training-throughput benchmarks for portable_bp against hand-written code and peer libraries.

Run ``python -m benchmarks --help`` from the repository root. This package must stay light
to import: ``__main__`` sets the thread-count environment variables *before* NumPy, PyTorch
or JAX are imported, so nothing here may import them at package import time.
"""

# the suffixes of a portable_bp contender's spec (``contenders.setup_pbp``): none, ``+ref``
# (the Array API reference path) and ``+each`` (one fit call per epoch); here, not in
# contenders, so that the command line checks them before NumPy is imported
PBP_VARIANTS = ("", "ref", "each")
