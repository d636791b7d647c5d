"""CuPy on a CUDA GPU (``cupy`` or ``cupy:N``).

``import cupy`` succeeds on machines without a GPU, so the probe runs a real tiny
computation (which also loads cuBLAS) before the backend is handed out. The step's
primitives run on CUDA kernels and cuBLAS (``cupy_ops.CupyOps`` over ``cupy_kernels``),
each checked against the Array API reference when the backend is made.
"""

import functools

from ._base import Backend, BackendUnavailable

HINT = 'pip install -e ".[cuda12]" or -e ".[cuda13]" in the checkout (matching your CUDA driver)'


def make(device=None) -> Backend:
    try:
        import array_api_compat.cupy as xp
        import cupy
    except ImportError as exc:
        raise BackendUnavailable("cupy", str(exc), HINT) from None
    try:
        index = int(device) if device not in (None, "") else 0
    except ValueError:
        raise BackendUnavailable("cupy", f"device must be a GPU number like 'cupy:1', got {device!r}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise RuntimeError(f"no GPU {index}: {count} CUDA device(s) visible")
        dev = cupy.cuda.Device(index)
        with dev:  # a real computation, with a matrix product so cuBLAS is loaded too
            a = cupy.ones((2, 2), dtype=cupy.float32)
            float((a @ a).sum())
        name = cupy.cuda.runtime.getDeviceProperties(index)["name"].decode()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError, driver too old, no libcublas...
        raise BackendUnavailable("cupy", f"{type(exc).__name__}: {exc}",
                                 HINT + "; check `nvidia-smi` shows a GPU and the driver is recent") from None

    def owns(a):
        return isinstance(a, cupy.ndarray) and a.device.id == index

    from . import cupy_kernels
    from .cupy_capture import CupyCapture
    from .cupy_ops import CupyOps

    with dev:
        tf32 = cupy_kernels.tf32()
    kernels = cupy_kernels.Kernels()
    ops = CupyOps(xp, kernels, functools.partial(cupy_kernels.gemm_subtract, tf32_products=tf32),
                  cupy_kernels.gemv_subtract, tf32=tf32)

    def capture_ops(blas):  # the same kernels, every product through cuBLAS called directly
        return CupyOps(xp, kernels, blas.gemm_subtract, blas.gemv_subtract, tf32=tf32, matmul=blas.matmul)

    return Backend(
        name="cupy", xp=xp, device=dev, spec=f"cupy:{index}" if device else "cupy",
        is_gpu=True,
        _to_numpy=lambda a: cupy.asnumpy(a),
        _owns=owns,
        _copy=lambda a: cupy.array(a, order="C", copy=True),
        _synchronize=lambda: dev.synchronize(),
        _context=lambda: cupy.cuda.Device(index),
        ops=ops,
        capture=CupyCapture(cupy, dev, capture_ops, tf32),
        executors=("graph",),
        info={"version": cupy.__version__, "device_name": name},
    )
