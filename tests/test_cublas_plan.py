"""The column-major bookkeeping of ``cublas_ctypes``, checked without a GPU: a NumPy
emulation of cublas<t>gemm (column-major operands read from memory by leading dimension)
runs the call that ``plan`` prepares, for row-major matrices, row slices of wider arrays
and transposed views, and must give alpha·A B + beta·C. The handle's bookkeeping (its workspace after a change of
stream, the library found) against stand-ins of libcublas and CuPy."""

import os
import sys
import types

import numpy as np
import pytest

from portable_bp.backends import cublas_ctypes
from portable_bp.backends.cublas_ctypes import Cublas, operand, plan


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


# -- the handle's bookkeeping, against stand-ins of libcublas and CuPy ----------------------------
class DeviceArray(np.ndarray):
    """A host array with CuPy's ``data.ptr``."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


class FakeCupy:
    uint8 = np.uint8

    def __init__(self, major=12):
        self.stream = types.SimpleNamespace(ptr=11)
        self.made = []
        runtime = types.SimpleNamespace(runtimeGetVersion=lambda: major * 1000 + 40)
        self.cuda = types.SimpleNamespace(get_current_stream=lambda: self.stream, runtime=runtime)

    def empty(self, shape, dtype):
        self.made.append(shape)
        return np.empty(shape, dtype).view(DeviceArray)

    def ones(self, shape, dtype):
        self.made.append(shape)
        return np.ones(shape, dtype).view(DeviceArray)

    def ascontiguousarray(self, a):
        return np.ascontiguousarray(a).view(DeviceArray)


class FakeLibcublas:
    """Records every call by name; the gemm runs the NumPy emulation above."""

    def __init__(self):
        self.calls = []
        for name in ("cublasCreate_v2", "cublasSetWorkspace_v2", "cublasSetMathMode", "cublasSetStream_v2",
                     "cublasDestroy_v2"):
            setattr(self, name, self._recorder(name))
        self.cublasSgemm_v2 = self.cublasDgemm_v2 = self._recorder("gemm")

    def _recorder(self, name):
        def call(*args):
            arg = args[1] if len(args) > 1 else None
            self.calls.append((name, getattr(arg, "value", arg)))
            return 0
        return call


def test_the_workspace_is_set_again_after_every_change_of_stream():
    """cublasSetStream resets the workspace to cuBLAS's own pool (which inside a capture
    would allocate): ours is set again right after it, and neither is called while the
    stream stays the same."""
    cupy, lib = FakeCupy(), FakeLibcublas()
    blas = Cublas(cupy, lib=lib)
    workspace = blas.workspace.data.ptr
    A, B = cupy.ones((3, 4), np.float64), cupy.ones((4, 2), np.float64)
    for stream in (11, 11, 12, 11):
        cupy.stream.ptr = stream
        blas.matmul(A, B)
    names = [name for name, _ in lib.calls]
    assert names.count("gemm") == 4 and names.count("cublasSetStream_v2") == 3
    for i, name in enumerate(names):
        if name == "cublasSetStream_v2":
            assert lib.calls[i + 1] == ("cublasSetWorkspace_v2", workspace)
    assert [arg for name, arg in lib.calls if name == "cublasSetStream_v2"] == [11, 12, 11]


def test_the_bias_steps_vector_of_ones_is_made_once():
    cupy = FakeCupy()
    blas = Cublas(cupy, lib=FakeLibcublas())
    D, b = cupy.ones((5, 3), np.float32), cupy.empty((3,), np.float32)
    made = len(cupy.made)
    for _ in range(3):
        blas.gemv_subtract(b, D, 0.1)
    assert len(cupy.made) == made + 1


def test_discovery_prefers_cupys_cuda_major_and_finds_the_wheels(tmp_path):
    """With CUDA 12 and 13 both present (a CUDA-13 torch beside cupy-cuda12x), CuPy's major
    comes first, by soname and among the NVIDIA wheels' files; the wheels' folders are found
    under the site-packages folder itself."""
    for folder, name in (("cublas", "libcublas.so.12"), ("cu13", "libcublas.so.13")):
        (tmp_path / "nvidia" / folder / "lib").mkdir(parents=True)
        (tmp_path / "nvidia" / folder / "lib" / name).touch()
    for major, first in ((12, "libcublas.so.12"), (13, "libcublas.so.13")):
        names = list(cublas_ctypes._candidates(major, [str(tmp_path)]))
        assert names[0] == first
        paths = [n for n in names if n.startswith(str(tmp_path))]
        assert [os.path.basename(p) for p in paths][0] == first and len(paths) == 2
    assert cublas_ctypes.cuda_major(FakeCupy(13)) == 13
    assert list(cublas_ctypes._candidates(None, []))[:2] == ["libcublas.so.12", "libcublas.so.13"]


def test_site_folders_are_where_python_imports_from(tmp_path, monkeypatch):
    (tmp_path / "nvidia").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert str(tmp_path) in cublas_ctypes._site_folders()


def test_a_missing_library_is_named_with_what_was_tried(monkeypatch):
    monkeypatch.setattr(cublas_ctypes, "_site_folders", lambda: [])
    monkeypatch.setattr(cublas_ctypes.ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    with pytest.raises(OSError, match=r"libcublas not found: tried libcublas.so.13, libcublas.so.12.*"
                                      r"pip install nvidia-cublas-cu12"):
        cublas_ctypes.load_library(13)
