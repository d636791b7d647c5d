"""Small datasets, local-file readers and host-side preprocessing.

Everything here runs on the host with NumPy only: data is loaded, split and
standardized once, then handed to whichever array backend trains on it. The
functions return plain ``numpy.ndarray`` objects:

* ``X`` is always ``float64`` with shape ``(n_samples, n_features)``;
* ``y`` is ``int64`` class labels with shape ``(n_samples,)`` for
  classification, or ``float64`` targets (``(n_samples, k)`` or
  ``(n_samples,)``) for regression.

Contents
--------
Bundled / synthetic data (seeded, no download):
    :func:`digits`, :func:`xor`, :func:`spirals`, :func:`moons`,
    :func:`sine`, :func:`blobs`.
Local files:
    :func:`read_idx` (MNIST IDX, plain or gzip), :func:`load_idx_pair`,
    :func:`read_csv`, :func:`read_npz`, and the dispatcher :func:`load_file`
    used by the command line's ``--data FILE``.
Preprocessing:
    :func:`train_test_split` and :class:`Standardizer`.

A file that cannot be read as asked raises ``ValueError`` whose message
starts with the file's path and then says what is wrong with it; a missing
file raises the usual ``FileNotFoundError``.
"""

from .files import load_file
from .idx import load_idx_pair, read_idx
from .npz import read_npz
from .preprocessing import Standardizer, train_test_split
from .synthetic import blobs, digits, moons, sine, spirals, xor
from .tables import read_csv

__all__ = [
    "Standardizer",
    "blobs",
    "digits",
    "load_file",
    "load_idx_pair",
    "moons",
    "read_csv",
    "read_idx",
    "read_npz",
    "sine",
    "spirals",
    "train_test_split",
    "xor",
]
