"""scikit-learn's ``coefs_`` and ``intercepts_`` beside the Network that computes with them.

scikit-learn keeps an MLP's parameters in two plain lists of NumPy arrays, (n_in, n_out)
weights and (n_out,) biases, and reads them afresh at every predict and every warm-started
or incremental fit. Users (and scikit-learn's own tests) replace an element
(``mlp.coefs_[0] = W``), write into one (``mlp.coefs_[0][:] = 0``), or assign whole lists
before the first ``partial_fit``. Our estimators keep the same lists as the truth, and the
:class:`~portable_bp.Network` built from them (on a GPU, say) as a cache; a
:class:`Handout` remembers what the lists held when that network was built, so the
estimator can tell cheaply whether the network still is what the lists say:

* where the lists hold views of the network's own arrays (the NumPy backend, after a fit),
  a write into them is a write into the network: identities are all there is to compare;
* where they hold copies (a GPU's weights, or a user's arrays the network copied), a digest
  of their bytes tells whether one was written since.
"""

from __future__ import annotations

import hashlib

import numpy as np


def hand_out(net) -> tuple[list, list]:
    """(coefs, intercepts) of ``net`` in scikit-learn's orientation: views of the network's
    own arrays where they are NumPy arrays, host copies otherwise."""
    pairs = net.params
    if all(isinstance(a, np.ndarray) for pair in pairs for a in pair):
        return [W.T for W, _ in pairs], [b for _, b in pairs]
    to_np = net.backend.to_numpy
    return ([np.array(to_np(W).T, order="C") for W, _ in pairs],
            [np.array(to_np(b)) for _, b in pairs])


def network_params(coefs, intercepts, dtype: str) -> list:
    """The lists as a Network's (W (n_out, n_in), b) pairs in ``dtype``: row-major W (a
    strided W would slow every pass), shared with the lists where they already are."""
    if len(coefs) != len(intercepts):
        raise ValueError(f"coefs_ and intercepts_ must have one entry per layer, got {len(coefs)} "
                         f"and {len(intercepts)}")
    return [(np.ascontiguousarray(np.asarray(c, dtype=dtype).T), np.asarray(b, dtype=dtype))
            for c, b in zip(coefs, intercepts)]


def layer_units(params) -> list[int]:
    """[n_in, n_hidden..., n_out] of (W (n_out, n_in), b) pairs."""
    return [int(params[0][0].shape[1])] + [int(W.shape[0]) for W, _ in params]


def list_dtype(coefs) -> str:
    """The precision the lists ask for: float32 when every weight matrix is float32 (as
    scikit-learn's own computation would stay), float64 otherwise."""
    return "float32" if all(np.asarray(c).dtype == np.float32 for c in coefs) else "float64"


class Handout:
    """What ``coefs_`` and ``intercepts_`` held when the network was built from (or handed
    out of) ``net``: the two list objects, their elements, and, unless every element is a
    view of the network's own memory, a digest of their contents."""

    def __init__(self, coefs, intercepts, net):
        self.coefs, self.intercepts = coefs, intercepts
        self.arrays = [*coefs, *intercepts]
        expected = [W.T for W, _ in net.params] + [b for _, b in net.params]
        shared = len(self.arrays) == len(expected) and all(map(_same_memory, self.arrays, expected))
        self.digest = None if shared else _digest(self.arrays)

    def current(self, coefs, intercepts) -> bool:
        """Whether the lists still hold what they held (the same lists, the same elements,
        and for copies the same contents)."""
        if coefs is not self.coefs or intercepts is not self.intercepts:
            return False
        arrays = [*coefs, *intercepts]
        if len(arrays) != len(self.arrays) or any(a is not b for a, b in zip(arrays, self.arrays)):
            return False
        return self.digest is None or _digest(arrays) == self.digest


def _same_memory(a, b) -> bool:
    """Whether NumPy array ``a`` is ``b`` in all but name: the same memory, shape, strides
    and dtype (a write into one is a write into the other)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    return (a.ctypes.data, a.shape, a.strides, a.dtype) == (b.ctypes.data, b.shape, b.strides, b.dtype)


def _digest(arrays) -> bytes:
    """A digest of the arrays' dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(repr(a.tolist()).encode() if a.dtype.hasobject else a.data)
    return h.digest()
