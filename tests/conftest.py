"""The backend x dtype fixture most tests run over, and the markers that narrow it.

``xp_case`` (a :class:`Case`: spec, dtype, backend, its namespace and tolerances) is
parametrized over every backend the registry knows (``portable_bp.backends.specs()``) and
both dtypes. Backends that cannot run here are skipped with the probe's reason (shown by
``-ra``); GPU ones carry the ``gpu`` marker, so ``-m gpu`` selects them and ``-m "not gpu"``
drops them. A test narrows the fixture with markers, in the manner of SciPy's
``skip_xp_backends``:

* ``@pytest.mark.backends("numpy", "torch")``: only these specs;
* ``@pytest.mark.skip_backends("jax", reason="...")``: not these (a spec, or one case
  ``"jax-float32"`` of the fixture);
* ``@pytest.mark.dtypes("float64")``: only these dtypes;
* ``@pytest.mark.requires("mutable")``: only backends with a capability: ``mutable``
  (arrays written in place), ``compiles`` (a jit), ``overrides`` (Ops overrides beyond the
  reference), ``gpu``, ``cpu``;
* ``@pytest.mark.cases(predicate, reason="...")``: only the parameter combinations the
  predicate accepts (it is called with the test's parameters it names, ``xp_case`` or
  ``xp_spec`` among them), for a combination that would repeat what another shows.

A case these markers rule out is not generated at all (dropped at collection, as if never
parametrized), so the suite never collects cases that can only skip; the skips left are
backends that cannot run here, with the probe's reason.

``xp_spec`` is the same over specs alone (for tests that pick dtypes themselves).

``registered_backend`` registers a test backend for the length of one test and removes it
(and its cached instances) afterwards.

How the suite runs (pyproject.toml): on two pytest-xdist workers (``-n 2 --dist
loadgroup``), each with one BLAS/OpenMP thread (its arrays are tiny; more threads only
spin-wait for a core the other worker holds); tests marked ``mpi`` (they start ``mpiexec``
ranks) all run on one worker, one at a time, so that at most 2 ranks run at once; tests
whose id names jax (and those marked ``every_backend`` or ``jax_fresh``) all run on one
worker, one after another, so that they reuse the programs JAX compiled for each other
(JAX's persistent compilation cache, in a temporary folder of the run's own, keeps those
that the memory cap drops); the tests whose child process is large (``jax_child``: it
imports JAX; ``big_child``) run one after another on the other worker, first, while the JAX
worker is still small. The workers collect without building a backend (``backend_facts``:
processes of the run answer what collection asks), so the other worker never imports JAX.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import sys
import tempfile

# one thread per process: for the libraries not loaded yet (torch's OpenMP pool, whose
# threads would only spin-wait for each other: 100x slower per op on a busy 2-core machine),
# and for the subprocesses the tests start
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# JAX's persistent compilation cache in a folder of this run's own (made by the process that
# starts the run, inherited by the xdist workers and the subprocesses of the tests, removed by
# it at the end): a program one worker compiled, or one dropped by the memory cap below, is
# read back instead of compiled again (18% of the JAX cases' processor time). A cache the
# user named is used as it is.
_OWN_JAX_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="portable_bp-tests-jax-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import threadpoolctl  # noqa: E402

threadpoolctl.threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))  # BLAS loaded before the line above

import backend_facts  # noqa: E402
from backend_facts import CAPABILITIES, facts  # noqa: E402
from memory_cap import MemoryCap  # noqa: E402

from portable_bp import backends as _backends  # noqa: E402
from portable_bp.backends import DTYPES, get, specs  # noqa: E402

if "torch" in sys.modules:  # loaded before this file (a plugin): its pool is already made
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Nothing here probes a backend at import: the xdist controller imports this file too, and
# collects nothing (probing would load torch and jax there for nothing: 500 MB). What the
# collection asks of a backend comes from backend_facts: under xdist short-lived processes
# of the run build every backend and answer for the workers (see its docstring)
SPECS = specs()  # (spec, on a GPU), from the registry
GPU_SPECS = [spec for spec, gpu in SPECS if gpu]
CPU_SPECS = [spec for spec, gpu in SPECS if not gpu]
# relative tolerance when two computations of the same quantity are compared
RTOL = {"float32": 2e-5, "float64": 1e-11}
# why a test skips JAX cases that repeat what another case shows: eager JAX compiles every
# operation for every new shape and dtype (seconds per test on a CPU); the x64 flag, once a
# float64 case has switched it on, stays on, so its float32 cases run the same code
JAX_REPEATS = "jax repeats the reference Ops here (op by op, compiled per shape): another case covers it"
# a test process's resident memory past which JAX's compiled programs are dropped (see
# memory_cap.MemoryCap): the worker that runs the jax group peaks up to ~160 MB above it
# (one test's programs, before the check after it); the other, which never imports JAX,
# stays under 600 MB. The JAX cases alone, in one process, took the same processor time with the limit
# at 850 MB as at 950 MB, and a quarter more at 750 MB (benchmarks/README.md)
JAX_WORKER_MB = 850


_learning: list[backend_facts.Learning] = []  # in the run's own process, under xdist


def pytest_unconfigure(config):
    for process in _learning:
        process.stop()
    if _OWN_JAX_CACHE is not None and not hasattr(config, "workerinput"):  # the run's own process
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


def _starts_workers(config) -> bool:
    """Whether this is the run's own process of a run on xdist workers (which collect)."""
    return (not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"
            and not config.option.collectonly)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist, in the run's own process, per worker: the backends' facts as the learning
    process answered (None where it failed: the worker then learns them itself)."""
    node.workerinput[backend_facts.WORKERINPUT_KEY] = backend_facts.all_answers(_learning) if _learning else None


def pytest_configure(config):
    if _starts_workers(config):  # learning while xdist starts the workers
        _learning.extend(backend_facts.start_learning())
    elif getattr(config, "workerinput", {}).get(backend_facts.WORKERINPUT_KEY):
        backend_facts.adopt(config.workerinput[backend_facts.WORKERINPUT_KEY])
    for line in ("cases(predicate, reason): generate only the parameter combinations the predicate accepts",
                 "mpi: starts MPI ranks (mpiexec): every such test runs on the same xdist worker",
                 "every_backend: builds every backend (JAX too) in the test's process: runs on the worker that "
                 "runs JAX, early",
                 "jax_child: starts a process that imports JAX (~0.5 GB): runs in the children group, which the "
                 "worker that does not run JAX starts with",
                 "big_child: starts a process of ~0.3 GB or more that holds no JAX: runs in the children group",
                 "jax_fresh: builds JAX backends afresh, each with its Ops check (~0.3 GB each): runs on the worker "
                 "that runs JAX, before it holds JAX",
                 "backends(*specs): run only on these backend specs",
                 "skip_backends(*specs, reason): do not run on these backend specs (or spec-dtype cases)",
                 "dtypes(*names): run only in these dtypes",
                 "requires(*capabilities): run only on backends with these capabilities "
                 f"({', '.join(CAPABILITIES)})"):
        config.addinivalue_line("markers", line)


@dataclasses.dataclass(frozen=True)
class Case:
    """One backend and dtype: what a test needs to make arrays and compare numbers."""

    spec: str
    dtype: str

    @property
    def backend(self):
        return get(self.spec)

    @property
    def xp(self):
        return self.backend.xp

    @property
    def rtol(self) -> float:
        return RTOL[self.dtype]

    @property
    def ops(self):
        """The backend's checked Ops (its overrides that passed the check)."""
        return self.backend.ops

    @property
    def reference_ops(self):
        """The Array API reference Ops on this backend's namespace."""
        return self.backend.reference_ops

    def asarray(self, host):
        """A host array on the backend, floats in this case's dtype."""
        host = np.asarray(host)
        return self.backend.asarray(host, self.dtype if host.dtype.kind == "f" else None)

    def __str__(self):
        return f"{self.spec}-{self.dtype}"


def runs(spec) -> bool:
    """Whether backend ``spec`` can run here (what a ``cases`` predicate checks before it
    asks the backend anything; the cases of one that cannot run skip with the reason)."""
    return facts(spec).runs


def probed(spec) -> tuple[bool, str]:
    """The registry's ``probe(spec)`` (runs here, reason if not), as collection learned it:
    for a test module's marks, at import (``probe`` itself would build the backend there)."""
    return facts(spec).runs, facts(spec).reason


def _marks(spec):
    """The gpu marker for GPU specs, and a skip with the probe's reason where it cannot run."""
    ok, reason = probed(spec)
    marks = [pytest.mark.gpu] if spec in GPU_SPECS else []
    if not ok:
        marks.append(pytest.mark.skip(reason=f"backend {spec} unavailable: {reason}"))
    return marks


def spec_cases(specs_=None):
    """pytest params over backend specs alone, marked and skipped like the fixture's cases."""
    return [pytest.param(spec, marks=_marks(spec), id=spec) for spec in (specs_ or [s for s, _ in SPECS])]


def _ruled_out(node, spec, dtype=None) -> bool:
    """Whether a marker on the test excludes this backend spec (and dtype)."""
    only = [s for m in node.iter_markers("backends") for s in m.args]
    if only and spec not in only:
        return True
    for m in node.iter_markers("skip_backends"):
        if spec in m.args or (dtype is not None and f"{spec}-{dtype}" in m.args):
            return True
    dtypes = [d for m in node.iter_markers("dtypes") for d in m.args]
    if dtype is not None and dtypes and dtype not in dtypes:
        return True
    caps = [cap for m in node.iter_markers("requires") for cap in m.args]
    # a backend that cannot run here cannot be asked: its cases skip with the probe's reason
    unknown = [cap for cap in caps if cap not in CAPABILITIES]
    if unknown:
        raise ValueError(f"requires{tuple(unknown)}: no such capability (known: {', '.join(CAPABILITIES)})")
    return bool(caps) and runs(spec) and not set(caps) <= set(facts(spec).capabilities)


def _params(item) -> dict:
    """The item's parameter values by name (none for a test that is not parametrized)."""
    return getattr(getattr(item, "callspec", None), "params", {})


def _generated(item) -> bool:
    """Whether the markers of the item's test let this parameter combination exist."""
    params = _params(item)
    case, spec = params.get("xp_case"), params.get("xp_spec")
    if case is not None and _ruled_out(item, case.spec, case.dtype):
        return False
    if spec is not None and _ruled_out(item, spec):
        return False
    for mark in item.iter_markers("cases"):
        predicate = mark.args[0]
        names = inspect.signature(predicate).parameters
        if not predicate(**{name: params[name] for name in names}):
            return False
    return True


def _in_jax_group(item) -> bool:
    """Whether a test runs JAX programs in the worker: its id names jax (a ``jax`` case of
    the fixtures, or a test about JAX), it builds every backend (``every_backend``) or JAX
    backends afresh (``jax_fresh``). Such tests join one xdist group, so one worker runs
    them one after another and reuses the programs they compile (the same shapes recur from
    case to case), and the other never holds JAX. A test that only starts a process that
    imports JAX is in the ``children`` group instead (:func:`_in_child_group`)."""
    if item.get_closest_marker("mpi") is not None or _in_child_group(item):
        return False
    return "jax" in item.nodeid or any(item.get_closest_marker(m) for m in ("every_backend", "jax_fresh"))


def _in_child_group(item) -> bool:
    """Whether a test starts a large process (``jax_child``: one that imports JAX, ~0.5 GB;
    ``big_child``: another of ~0.3 GB or more) and runs no JAX itself: such tests join the
    ``children`` group, which the worker that does not run the ``jax`` group runs first,
    one after another, while the other worker's JAX programs are still few (so its memory
    is still small); the ``jax`` group no longer waits for them. ``every_backend``,
    ``jax_fresh`` and the JAX cases of the fixtures stay in the ``jax`` group, ``mpi`` in
    its own."""
    if not any(item.get_closest_marker(m) is not None for m in ("jax_child", "big_child")):
        return False
    grouped_elsewhere = any(item.get_closest_marker(m) is not None for m in ("every_backend", "jax_fresh", "mpi"))
    return not grouped_elsewhere and not _jax_case(item)


def _jax_case(item) -> bool:
    """Whether the test is a JAX case of the ``xp_case`` or ``xp_spec`` fixture."""
    params = _params(item)
    spec = getattr(params.get("xp_case"), "spec", None) or params.get("xp_spec")
    return isinstance(spec, str) and spec.partition(":")[0] == "jax"


def pytest_collection_modifyitems(config, items):
    """The ``jax`` group first, the ``children`` group second, the ``mpi`` tests third, then
    the rest: xdist (``--no-loadscope-reorder``) hands the groups out in this order, so one
    worker starts on the JAX cases (two minutes of them, the suite's longest run of tests
    one after another) and the other on the tests whose child process is large, while the
    first worker's JAX programs are still few; then on the ``mpi`` tests (a minute of
    ``mpiexec`` runs and waits), and both share the rest as they become free. The ``jax``
    group starts with the tests that build JAX backends afresh (a check each), then those
    that build every backend in the worker (see :func:`_jax_group_rank`). Every worker sorts
    the same way, as xdist requires."""
    items.sort(key=lambda item: (not _in_jax_group(item), not _in_child_group(item),
                                 item.get_closest_marker("mpi") is None, _jax_group_rank(item)))


def _jax_group_rank(item) -> int:
    """0: the test builds JAX backends afresh (``jax_fresh``); 1: it starts a process that
    imports JAX and builds every backend itself (``jax_child`` and ``every_backend``); 2:
    only the latter; 3: none of these. The first two run in a worker that holds few JAX
    programs yet."""
    child, here = item.get_closest_marker("jax_child") is not None, item.get_closest_marker("every_backend") is not None
    if item.get_closest_marker("jax_fresh") is not None:
        return 0
    return 1 if child and here else 2 if here else 3


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """A test function's cases without those its markers rule out (see the module
    docstring): they are never collected, so never reported as skipped or deselected.
    ``mpi`` tests join one xdist group: one worker runs them one after another, so the
    suite never starts more than one mpiexec (2 ranks) at a time."""
    result = yield
    if not isinstance(result, list):
        return result
    kept = [item for item in result if not isinstance(item, pytest.Function) or _generated(item)]
    for item in kept:
        if isinstance(item, pytest.Function) and item.get_closest_marker("mpi"):
            item.add_marker(pytest.mark.xdist_group("mpi"))
        elif isinstance(item, pytest.Function) and _in_jax_group(item):
            item.add_marker(pytest.mark.xdist_group("jax"))
        elif isinstance(item, pytest.Function) and _in_child_group(item):
            item.add_marker(pytest.mark.xdist_group("children"))
    return kept


def pytest_generate_tests(metafunc):
    """``xp_case`` over every backend x dtype and ``xp_spec`` over every spec, made at
    collection (in the workers) rather than when this file is imported."""
    if "xp_case" in metafunc.fixturenames:
        metafunc.parametrize("xp_case", [pytest.param(Case(spec, dtype), marks=_marks(spec), id=f"{spec}-{dtype}")
                                         for spec, _ in SPECS for dtype in DTYPES], indirect=True)
    if "xp_spec" in metafunc.fixturenames:
        metafunc.parametrize("xp_spec", spec_cases(), indirect=True)


@pytest.fixture
def xp_case(request) -> Case:
    """Every backend x dtype the test's markers leave (parametrized by pytest_generate_tests)."""
    return request.param


@pytest.fixture
def xp_spec(request) -> str:
    """Every backend spec the test's markers leave (``dtypes`` does not apply)."""
    return request.param


_memory_cap = MemoryCap(limit_mb=JAX_WORKER_MB)


def pytest_runtest_teardown(item, nextitem):
    """After each test: the memory cap (see :class:`memory_cap.MemoryCap`)."""
    _memory_cap.after_test(leaving_jax=_in_jax_group(item) and nextitem is not None and not _in_jax_group(nextitem),
                           leaving_module=nextitem is None or nextitem.module is not item.module)


@pytest.fixture
def registered_backend():
    """``register(name, factory)``: the backend ``name`` exists for this test only."""
    names = []

    def register(name, factory):
        _backends.register(name, factory, replace=True)
        names.append(name)
        return name

    yield register
    for name in names:
        _backends.unregister(name)


# -- helpers shared by the tests -----------------------------------------------------------
def make_data(n, n_in, n_out, loss, seed=0):
    """(X, Z) for ``loss``: standard normal X; labels for cross-entropy, 0/1 targets for
    binary cross-entropy, counts for Poisson, uniform targets in [0, 1) for MSE."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, n)
    if loss == "poisson":
        return X, rng.poisson(1.5, (n, n_out)).astype(float)
    if loss == "binary_cross_entropy":
        return X, (rng.random((n, n_out)) > 0.5).astype(float)
    return X, rng.random((n, n_out))


def to_np(net_or_backend, arr):
    backend = getattr(net_or_backend, "backend", net_or_backend)
    return np.asarray(backend.to_numpy(arr), dtype=np.float64)


def assert_close(actual, expected, dtype, scale=1.0):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    tol = RTOL[dtype] * scale
    largest = np.abs(expected[np.isfinite(expected)]).max(initial=0)  # NaN and inf must match exactly
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(1.0, largest))
