"""JAX arrays (``jax.numpy`` is an Array API namespace). Arrays are immutable, so this
backend is marked ``mutable=False`` and runs the functional reference Ops (:class:`JaxOps`:
the reference, with a batch cut by ``lax.dynamic_slice`` and the epoch's check compiled).
Executed op by op JAX is slow (each call dispatches on its own), so the training step, written
as a pure function of arrays, is compiled with ``jax.jit`` (``Backend.compile``), and a whole
epoch runs as one program looping over its batches with ``lax.scan`` (``Backend.loop``).

float64 needs JAX's ``jax_enable_x64`` flag; it is switched on when a float64 network is made.
Every compiled program is traced with float32 matrix products at full precision
(``MATMUL_PRECISION``): on NVIDIA GPUs JAX's default is TF32, whose ~1e-3 relative error
would part jax:gpu's float32 trajectory from NumPy's, CuPy's and torch's.
"""

import functools
import math
import warnings

import numpy as np

from ..scalars import keep_python_scalars
from ._base import Backend, BackendUnavailable
from .jax_ops import JaxOps

# A small step (few carried elements) costs little next to each iteration of the loop
# around it: the epoch's loop is then unrolled, so there are fewer iterations.
UNROLL = 8
UNROLL_MAX_ELEMENTS = 65536
# ... except the tiniest on the CPU: XLA:CPU compiles a whole loop into one kernel when one
# iteration reads and writes under 1 KiB (xla_cpu_small_while_loop_byte_threshold), which
# an unrolled body never does (config A float32: 0.22 ms an epoch as one kernel, 0.8-1.1 ms
# unrolled). A step reads and writes its carry about 8 times (A: 108 bytes carried, ~830
# accessed per iteration; float64's 216 bytes are past the threshold, and keep unrolling).
UNROLL_MIN_BYTES_CPU = 128
# float32 matrix products in full float32: JAX's default on NVIDIA GPUs is TF32 (~1e-3
# relative), where NumPy, CuPy and torch compute float32 products in float32
MATMUL_PRECISION = "highest"


def _working_device(jax, jnp, device):
    """The JAX device ``device`` names ("gpu", "gpu:1", None: the default), once a small
    computation on it has given an answer; :class:`BackendUnavailable` otherwise."""
    platform, _, index = (device or "").partition(":")
    try:
        devices = jax.devices(platform or None)
        dev = devices[int(index or 0)]
    except (RuntimeError, IndexError, ValueError) as exc:
        raise BackendUnavailable("jax", f"no JAX device {device!r}: {exc}") from None
    try:
        float(jnp.sum(jax.device_put(jnp.ones(2), dev) * 2))
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailable("jax", f"a test computation on {dev} failed: {exc}") from None
    return dev


def _from_host(jax, dev, host, dtype):
    """``host`` on ``dev`` in ``dtype`` (its own if None): a copy of the caller's memory cast
    on the host, then a transfer. ``jnp.asarray(host, device=dev)`` compiles two programs
    for every new shape and dtype; ``device_put`` alone may go on using the buffer it is
    given (on the CPU it wrapped it, even with ``may_alias=False``). A dtype asked for that
    JAX does not hold (float64 or int64 without x64) warns as ``jnp.asarray`` does."""
    wanted = host.dtype if dtype is None else np.dtype(dtype)
    held = np.dtype(jax.dtypes.canonicalize_dtype(wanted))
    if dtype is not None and held != wanted:
        warnings.warn(f"Explicitly requested dtype {wanted} requested in asarray is not available, and will be "
                      f"truncated to dtype {held}. To enable more dtypes, set the jax_enable_x64 configuration option "
                      "or the JAX_ENABLE_X64 shell environment variable.", UserWarning, stacklevel=3)
    return jax.device_put(np.array(host, dtype=held, copy=True), dev)


def make(device=None) -> Backend:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise BackendUnavailable("jax", str(exc), 'pip install -e ".[jax]" in the checkout') from None
    dev = _working_device(jax, jnp, device)

    def owns(a):
        return isinstance(a, jax.Array) and a.devices() == {dev}

    def enable_float64():
        jax.config.update("jax_enable_x64", True)

    def loop(body, carry, xs, length):
        """``lax.scan`` over ``length`` iterations, unrolled ``UNROLL`` times when the
        carried parameters and state are small (``UNROLL_MAX_ELEMENTS``) but not tiny on the
        CPU (``UNROLL_MIN_BYTES_CPU``); the shapes are known while tracing."""
        leaves = jax.tree.leaves(carry)
        size = sum(math.prod(a.shape) for a in leaves)
        tiny = dev.platform == "cpu" and sum(math.prod(a.shape) * a.dtype.itemsize for a in leaves) \
            <= UNROLL_MIN_BYTES_CPU
        return jax.lax.scan(body, carry, xs, length=length,
                            unroll=UNROLL if size <= UNROLL_MAX_ELEMENTS and not tiny else 1)

    def compile(fn, **kwargs):
        """``jax.jit`` of ``fn`` traced at ``MATMUL_PRECISION`` (read when a product is
        traced; the user's own JAX code keeps its default)."""
        @functools.wraps(fn)
        def precise(*args, **kw):
            with jax.default_matmul_precision(MATMUL_PRECISION):
                return fn(*args, **kw)
        return jax.jit(precise, **kwargs)

    zero = jax.device_put(0.0, dev)  # made once: a transfer per call cost more than the wait
    # compiled once: ``zero + 0`` dispatched op by op went through jax.numpy's argument
    # checks and promotion at every call (~20 µs, ~150 µs on a cold cache: more than config
    # A's whole epoch), the compiled program's call is C++ (~5 µs)
    queued_after = jax.jit(lambda z: z + 1)

    def synchronize():
        queued_after(zero).block_until_ready()

    keep_python_scalars(jnp)  # the compiled step folds them in; a cached 0-d array could be a tracer
    spec = "jax" if device is None else f"jax:{device}"
    return Backend(
        name="jax", xp=jnp, device=dev, spec=spec, mutable=False,
        is_gpu=dev.platform == "gpu", ops=JaxOps(jnp, jax),
        compile=compile, loop=loop, executors=("scan", "jit"),
        _to_numpy=lambda a: np.asarray(a),
        _from_host=functools.partial(_from_host, jax, dev),
        _copy=lambda a: jax.device_put(a, dev, may_alias=False),  # jnp.array(a, copy=True) compiles too
        _to_float=lambda a: float(np.asarray(a)),  # jax.Array.__float__ takes a slower route
        _owns=owns, _synchronize=synchronize, _enable_float64=enable_float64,
        info={"version": jax.__version__, "device_name": str(dev)},
    )
