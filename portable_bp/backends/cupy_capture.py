"""CUDA graphs on CuPy: the training step recorded by stream capture, replayed per batch.

Two things stand in the way of capturing CuPy code, and each has its answer here:

* CuPy refuses its own cuBLAS calls while a stream is captured: the recorded step's Ops
  (:meth:`CupyCapture.prepare_ops`) do every matrix product through cuBLAS called directly
  (``cublas_ctypes``), with their own handle and workspace;
* memory allocated while capturing belongs to the graph for as long as it lives: if it
  came from CuPy's ordinary pool and went back there, other arrays could be given the same
  addresses and every replay would overwrite them. The capture allocates from CuPy's
  stream-ordered pool (``MemoryAsyncPool``, cudaMallocAsync), whose allocations made during
  a capture are the graph's own memory nodes, reserved for it and released with it.

``portable_bp.train.captured`` drives it: ``warmup()`` for the eager step before recording,
``record(body) -> graph`` with ``graph.replay()``.
"""

from __future__ import annotations

import contextlib

from ._check import checked


class _Graph:
    """A captured CuPy graph, replayed on the current stream (so that what follows in the
    step's stream, eager code included, runs after it)."""

    def __init__(self, cupy, graph, keep):
        self.cupy, self.graph, self.keep = cupy, graph, keep

    def replay(self):
        self.graph.launch(self.cupy.cuda.get_current_stream())


class CupyCapture:
    """What ``Backend.capture`` is on CuPy."""

    def __init__(self, cupy, device, ops_factory, tf32=False):
        self.cupy, self.device, self._factory, self.tf32 = cupy, device, ops_factory, tf32
        self._ops = None
        self._capture = None  # (stream, pool), made by the first recording

    def prepare_ops(self, ops):
        """The recorded step's Ops: the backend's kernels with every product through cuBLAS
        called directly, checked against the reference once (a product that fails its
        check falls back to CuPy's own, and recording then fails over to eager)."""
        from .cupy_ops import CupyOps

        if not isinstance(ops, CupyOps):  # the reference Ops (fused_kernels off): as they are
            return ops
        if self._ops is None:
            from .cublas_ctypes import Cublas

            with self.device:
                blas = Cublas(self.cupy, tf32=self.tf32)
                self._ops = checked(self._factory(blas), self.cupy.asarray, self.cupy.asnumpy)
            self._ops.name = "cupy+cublas-capture"
        return self._ops

    def warmup(self):
        return contextlib.nullcontext()

    def _stream_and_pool(self):
        """The capture's stream and CuPy's stream-ordered pool, made once and inside this
        device's context: a stream belongs to the device current when it is made, and
        ``MemoryAsyncPool`` sets itself up on every visible GPU."""
        if self._capture is None:
            with self.device:
                self._capture = self.cupy.cuda.Stream(non_blocking=True), self.cupy.cuda.MemoryAsyncPool()
        return self._capture

    def record(self, body):
        stream, pool = self._stream_and_pool()
        with self.device, self.cupy.cuda.using_allocator(pool.malloc), stream:
            stream.begin_capture()
            try:
                body()
            finally:
                graph = stream.end_capture()
        return _Graph(self.cupy, graph, (stream, pool))
