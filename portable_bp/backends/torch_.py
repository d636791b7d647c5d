"""PyTorch tensors through array-api-compat's torch namespace (CPU or ``cuda:N``).

Only tensors are used, never autograd: every tensor is created without ``requires_grad``.
The step's primitives are the in-place Array API ones, with plain SGD's steps in one call
each: W −= lr·Dᵀ A as ``addmm_`` and b −= lr·Σ_rows D as ``addmv_`` against a cached vector
of ones (:class:`TorchOps`). On CUDA the step is captured as a CUDA graph and replayed per
batch (:class:`TorchCapture`, ``portable_bp.train.captured``).
"""

import contextlib

from ..ops import InPlaceOps
from ._base import Backend, BackendUnavailable

HINT = ('pip install -e ".[torch]" in the checkout (CPU wheels: '
        'pip install torch --index-url https://download.pytorch.org/whl/cpu)')


class TorchOps(InPlaceOps):
    """In-place Array API primitives, and torch's multiply-accumulate products for SGD."""

    name = "torch"

    def __init__(self, xp, torch, device):
        super().__init__(xp)
        self._torch, self._device = torch, device
        self._ones: dict = {}

    def subtract_product(self, W, D, A, alpha):
        """W ← W − alpha·Dᵀ A in one ``addmm_``: no gradient tensor."""
        return W.addmm_(D.T, A, alpha=-alpha)

    def subtract_colsum(self, b, D, alpha):
        """b ← b − alpha·Σ_rows D in one ``addmv_`` against cached ones."""
        key = (D.shape[0], D.dtype)
        ones = self._ones.get(key)
        if ones is None:
            ones = self._ones[key] = self._torch.ones(D.shape[0], dtype=D.dtype, device=self._device)
        return b.addmv_(D.T, ones, alpha=-alpha)


class TorchCapture:
    """CUDA graphs through ``torch.cuda``: the step before recording runs on a side stream
    (as PyTorch asks, so that lazy initialisations and allocator warm-up stay out of the
    graph), the recording on a capture stream of this backend's own device (not
    ``torch.cuda.graph``'s process-wide default, made on whichever GPU was current when it
    was first asked for), and every recording of this backend shares one memory pool. Both
    streams are made once."""

    def __init__(self, torch, device):
        self.torch, self.device, self.pool = torch, device, None
        self._side = self._capture = None

    @contextlib.contextmanager
    def warmup(self):
        cuda = self.torch.cuda
        if self._side is None:
            self._side = cuda.Stream(device=self.device)
        side = self._side
        side.wait_stream(cuda.current_stream(self.device))
        with cuda.stream(side):
            yield
        cuda.current_stream(self.device).wait_stream(side)

    def record(self, body):
        cuda = self.torch.cuda
        if self.pool is None:
            self.pool = cuda.graph_pool_handle()
        if self._capture is None:
            self._capture = cuda.Stream(device=self.device)
        graph = cuda.CUDAGraph()
        with cuda.device(self.device), cuda.graph(graph, pool=self.pool, stream=self._capture):
            body()
        return graph


def _device(torch, device):
    """The torch device for ``device`` ('cpu', 'cuda', 'cuda:1'), or BackendUnavailable."""
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError as exc:
        raise BackendUnavailable("torch", f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda":
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
    return dev


def make(device=None) -> Backend:
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError as exc:
        raise BackendUnavailable("torch", str(exc), HINT) from None
    dev = _device(torch, device)
    is_gpu = dev.type == "cuda"
    return Backend(
        name="torch", xp=xp, device=dev, spec="torch" if dev.type == "cpu" else f"torch:{dev}",
        is_gpu=is_gpu,
        _to_numpy=lambda a: a.detach().cpu().numpy(),
        _owns=lambda a: isinstance(a, torch.Tensor) and a.device == dev,
        _copy=lambda a: a.clone(memory_format=torch.contiguous_format),
        _synchronize=(lambda: torch.cuda.synchronize(dev)) if is_gpu else (lambda: None),
        ops=TorchOps(xp, torch, dev),
        capture=TorchCapture(torch, dev) if is_gpu else None,
        executors=("graph",) if is_gpu else (),
        info={"version": torch.__version__,
              "device_name": torch.cuda.get_device_name(dev) if is_gpu else "cpu"},
    )
