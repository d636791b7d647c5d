"""The column-major bookkeeping of ``cublas_ctypes``, checked without a GPU: a NumPy
emulation of cublas<t>gemm (column-major operands read from memory by leading dimension)
runs the call that ``plan`` prepares, for row-major matrices, row slices of wider arrays
and transposed views, and must give alpha·A B + beta·C."""

import numpy as np
import pytest

from portable_bp.backends.cublas_ctypes import operand, plan


def column_major(memory, trans, rows, cols, ld):
    """op(M) as cuBLAS reads it: M stored column-major (element (i, j) at i + j·ld)."""
    stored = (rows, cols) if trans == 0 else (cols, rows)
    M = np.lib.stride_tricks.as_strided(memory, shape=stored, strides=(memory.itemsize, ld * memory.itemsize))
    return M if trans == 0 else M.T


def emulated_gemm(p, C, alpha, beta):
    m, n, k = p["m"], p["n"], p["k"]
    first = column_major(p["first"], p["transa"], m, k, p["lda"])
    second = column_major(p["second"], p["transb"], k, n, p["ldb"])
    out = np.lib.stride_tricks.as_strided(C, shape=(m, n), strides=(C.itemsize, p["ldc"] * C.itemsize))
    out[...] = alpha * (first @ second) + beta * out


def layouts(rng, rows, cols):
    yield "contiguous", rng.standard_normal((rows, cols))
    yield "row slice", rng.standard_normal((rows + 3, cols))[1:rows + 1]
    yield "transposed", rng.standard_normal((cols, rows)).T
    yield "transposed row slice", rng.standard_normal((cols + 2, rows))[2:].T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_computes_the_row_major_product(dtype):
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name_a, A in layouts(rng, 5, 7):
        for name_b, B in layouts(rng, 7, 4):
            A, B = A.astype(dtype), B.astype(dtype)
            C = rng.standard_normal((5, 4)).astype(dtype)
            want = 0.5 * A @ B - 2.0 * C
            p = plan(A, B, C)
            assert p is not None, (name_a, name_b)
            emulated_gemm(p, C, 0.5, -2.0)
            np.testing.assert_allclose(C, want, rtol=tol, atol=tol, err_msg=f"{name_a} x {name_b}")


def test_plan_refuses_layouts_cublas_cannot_read():
    rng = np.random.default_rng(1)
    columns = rng.standard_normal((6, 9))[:, ::2]  # neither rows nor columns contiguous
    assert operand(columns) is None
    assert plan(columns, rng.standard_normal((5, 3)), np.empty((6, 3))) is None
    assert plan(rng.standard_normal((6, 5)), rng.standard_normal((5, 3)), np.empty((3, 6)).T) is None


def test_subtract_product_as_a_plan():
    """W <- W - alpha·Dᵀ A: the gemm ``Cublas.gemm_subtract`` makes (Dᵀ is a transposed view)."""
    rng = np.random.default_rng(2)
    W, D, A = rng.standard_normal((4, 6)), rng.standard_normal((9, 4))[2:], rng.standard_normal((7, 6))
    want = W - 0.3 * D.T @ A
    emulated_gemm(plan(D.T, A, W), W, -0.3, 1.0)
    np.testing.assert_allclose(W, want, rtol=1e-12, atol=1e-12)
