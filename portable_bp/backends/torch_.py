"""PyTorch tensors through array-api-compat's torch namespace (CPU or ``cuda:N``).

Only tensors are used, never autograd: every tensor is created without ``requires_grad``.
Plain SGD's step W -= Dᵀ A is one ``addmm_`` (a multiply-accumulate product, in place), and
its bias step b -= Σ_rows D one ``addmv_`` against a cached vector of ones.
"""

from ._base import Backend, BackendUnavailable, kernels_off, subtract_colsum_agrees

HINT = ('pip install "portable_bp[torch]" (CPU wheels: '
        'pip install torch --index-url https://download.pytorch.org/whl/cpu)')


def make(device=None) -> Backend:
    try:
        import torch
        import array_api_compat.torch as xp
    except ImportError as exc:
        raise BackendUnavailable("torch", str(exc), HINT) from None
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError as exc:
        raise BackendUnavailable("torch", f"bad device {device!r}: {exc}") from None
    is_gpu = dev.type == "cuda"
    if is_gpu:
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch", f"torch {torch.__version__} sees no CUDA device",
                                     "install a CUDA build of torch on a machine with an NVIDIA GPU")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise BackendUnavailable("torch", f"no {dev}: {torch.cuda.device_count()} CUDA device(s)")
    try:  # a real tiny computation: import alone proves nothing about the device
        float((torch.ones(2, device=dev) * 2).sum())
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot run"
        raise BackendUnavailable("torch", f"a test computation on {dev} failed: {exc}") from None

    def owns(a):
        return isinstance(a, torch.Tensor) and a.device == dev

    def subtract_matmul(W, D, A):
        return W.addmm_(D.T, A, alpha=-1)

    ones: dict = {}

    def subtract_colsum(b, D):
        key = (D.shape[0], D.dtype)
        if key not in ones:
            ones[key] = torch.ones(D.shape[0], dtype=D.dtype, device=dev)
        return b.addmv_(D.T, ones[key], alpha=-1)

    fused_off = kernels_off()  # PORTABLE_BP_FUSED=0
    colsum_ok = not fused_off and subtract_colsum_agrees(
        subtract_colsum, lambda a: torch.as_tensor(a, device=dev), lambda t: t.cpu().numpy())

    spec = "torch" if dev.type == "cpu" else f"torch:{dev}"
    return Backend(
        name="torch", xp=xp, device=dev, spec=spec, is_gpu=is_gpu,
        _to_numpy=lambda a: a.detach().cpu().numpy(),
        _owns=owns,
        subtract_matmul=None if fused_off else subtract_matmul,
        subtract_colsum=subtract_colsum if colsum_ok else None,
        _synchronize=(lambda: torch.cuda.synchronize(dev)) if is_gpu else (lambda: None),
        info={"version": torch.__version__,
              "device_name": torch.cuda.get_device_name(dev) if is_gpu else "cpu"},
    )
