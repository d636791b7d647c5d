"""Small datasets, local-file readers and host-side preprocessing.

Everything here runs on the host with NumPy only: data is loaded, split and
standardized once, then handed to whichever array backend trains on it. The
functions return plain ``numpy.ndarray`` objects:

* ``X`` is always ``float64`` with shape ``(n_samples, n_features)``;
* ``y`` is class labels with shape ``(n_samples,)`` for classification (``int64``;
  booleans from an NPZ stay ``bool``, text labels of a CSV stay text), or ``float64`` targets (``(n_samples, k)`` or
  ``(n_samples,)``) for regression.

Contents
--------
Bundled / synthetic data (seeded, no download):
    :func:`digits`, :func:`xor`, :func:`spirals`, :func:`moons`,
    :func:`sine`, :func:`blobs`.
Local files:
    :func:`read_idx` (MNIST IDX, plain or gzip), :func:`load_idx_pair`,
    :func:`read_csv` (text class labels allowed in the target column), :func:`read_npz`,
    and the dispatcher :func:`load_file` used by the command line's ``--data FILE``;
    :func:`read_table` and :func:`load_table` also return the header's column names.
Labels:
    :func:`target_type` (scikit-learn's ``type_of_target``) and :func:`encode_labels`
    (``LabelEncoder``'s sorted classes).
Preprocessing:
    :func:`train_test_split` and :class:`Standardizer`.

A file that cannot be read as asked raises ``ValueError`` whose message
starts with the file's path and then says what is wrong with it; a missing
file raises the usual ``FileNotFoundError``.

Hostile and careless files
--------------------------
Readers never trust a size a file declares (an IDX or ``.npy`` header, a zip
directory, a gzip stream): it is checked before anything is allocated or
inflated, against a byte limit that bounds the (decompressed) data a reader
takes in and each float64 array it returns. The limit is the reader's
``max_bytes=`` keyword, else the environment variable ``PORTABLE_BP_MAX_BYTES``
(:data:`MAX_BYTES_ENV`, a whole number of bytes), else
:data:`DEFAULT_MAX_BYTES` (4 GiB); a smaller one suits untrusted input (a
gzip bomb is refused once the limit is reached, which for 4 GiB of text takes
minutes of parsing). Peak memory is a small multiple of the data: the arrays
read (NPZ, IDX) or about twice the float64 table (CSV). Only regular files
are read (a directory, FIFO or device is refused without blocking); NPZ
object arrays are never unpickled. Labels keep their exact values: integer
labels beyond int64 are refused, CSV whole numbers become int64 labels only
below 2**53 in magnitude (larger ones stay float64 targets), and NaN, inf or
values that overflow float64 are refused with where they are.
"""

from .._safe_io import DEFAULT_MAX_BYTES, MAX_BYTES_ENV
from .files import load_file, load_table
from .idx import load_idx_pair, read_idx
from .labels import encode_labels, target_type
from .npz import read_npz
from .preprocessing import Standardizer, train_test_split
from .synthetic import blobs, digits, moons, sine, spirals, xor
from .tables import Table, read_csv, read_table

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "Standardizer",
    "Table",
    "blobs",
    "digits",
    "encode_labels",
    "load_file",
    "load_idx_pair",
    "load_table",
    "moons",
    "read_csv",
    "read_idx",
    "read_npz",
    "read_table",
    "sine",
    "spirals",
    "target_type",
    "train_test_split",
    "xor",
]
