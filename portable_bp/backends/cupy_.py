"""CuPy on a CUDA GPU (``cupy`` or ``cupy:N``).

``import cupy`` succeeds on machines without a GPU, so the probe runs a real tiny
computation (which also loads cuBLAS) before the backend is handed out. Fused
element-wise kernels for the hot path live in ``cupy_kernels``; the Array API code stays
the reference and the fallback. Plain SGD's step W -= Dᵀ A is one cuBLAS gemm with beta = 1
(``cupy.cublas.gemm``) and its bias step b -= Σ_rows D one gemv against a vector of ones,
each checked against a host computation once when the backend is made.
"""

from ._base import Backend, BackendUnavailable, kernels_off

HINT = 'pip install "portable_bp[cuda12]" or "portable_bp[cuda13]" (matching your CUDA driver)'


def make(device=None) -> Backend:
    try:
        import cupy
        import array_api_compat.cupy as xp
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

    fused_off = kernels_off()  # PORTABLE_BP_FUSED=0
    return Backend(
        name="cupy", xp=xp, device=dev, spec=f"cupy:{index}" if device else "cupy",
        is_gpu=True,
        _to_numpy=lambda a: cupy.asnumpy(a),
        _owns=owns,
        _synchronize=lambda: dev.synchronize(),
        _context=lambda: cupy.cuda.Device(index),
        fused=None if fused_off else cupy_kernels.FusedOps(dev),
        subtract_matmul=None if fused_off else cupy_kernels.subtract_matmul(dev),
        subtract_colsum=None if fused_off else cupy_kernels.subtract_colsum(dev),
        info={"version": cupy.__version__, "device_name": name},
    )
