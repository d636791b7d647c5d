"""Small products on one BLAS thread (numpy_blas.SerialProducts): OpenBLAS hands every
product above 64³ multiply-adds to its threads, and under CPU contention each hand-off waits
for a scheduler time slice. The NumPy backend's products below the threshold run with the
library's thread count lowered to 1 and put back after; larger ones are left alone. The
effect on wall time is a benchmark (benchmarks/blas_contention.py), not a test: these
tests check which products run on how many threads, and that the setting always comes back.
"""

import threading

import numpy as np
import pytest

from portable_bp.activations import ACTIVATIONS
from portable_bp.backends import get, numpy_blas
from portable_bp.backends.numpy_ops import NumpyOps
from portable_bp.ops import DenseGrad, Ops

XP = get("numpy").xp
LIBRARY = numpy_blas._library_paths()
THREADS = numpy_blas._thread_functions(LIBRARY[0]) if LIBRARY else None
needs_blas_threads = pytest.mark.skipif(THREADS is None, reason="this NumPy bundles no OpenBLAS (conda/MKL/Accelerate)")


class FakeLibrary:
    """A BLAS thread setting that records every change."""

    def __init__(self, threads):
        self.threads, self.changes = threads, []

    def get(self):
        return self.threads

    def set(self, n):
        self.changes.append(n)
        self.threads = n


def test_a_small_product_runs_on_one_thread_and_the_count_comes_back():
    lib = FakeLibrary(4)
    serial = numpy_blas.SerialProducts(lib.get, lib.set, below=1000, above=0)
    seen = serial.call(lib.get)
    assert seen == 1 and lib.threads == 4 and lib.changes == [1, 4]
    a, b = np.ones((9, 10)), np.ones((10, 11))  # 990 multiply-adds: small
    lib.changes.clear()
    np.testing.assert_array_equal(serial.matmul(a, b), a @ b)
    assert lib.changes == [1, 4]
    lib.changes.clear()
    np.testing.assert_array_equal(serial.matmul(a, np.ones((10, 12))), a @ np.ones((10, 12)))  # 1080: not small
    assert lib.changes == []


def test_products_the_library_never_splits_are_left_alone():
    """Below NEVER_THREADED multiply-adds OpenBLAS keeps a product on the calling thread by
    itself: no lock, no thread-count calls (they cost more than config A's whole product)."""
    lib = FakeLibrary(4)
    serial = numpy_blas.SerialProducts(lib.get, lib.set)
    k = numpy_blas.NEVER_THREADED // 16
    a, b = np.ones((4, k)), np.ones((k, 4))  # NEVER_THREADED multiply-adds: lowered
    np.testing.assert_array_equal(serial.matmul(a, b), a @ b)
    assert lib.changes == [1, 4]
    lib.changes.clear()
    a, b = np.ones((4, k - 1)), np.ones((k - 1, 4))  # 16 fewer: left to the library
    np.testing.assert_array_equal(serial.matmul(a, b), a @ b)
    assert lib.changes == [] and not serial.is_small(1, 4, 3)


def test_the_count_comes_back_when_the_product_raises_and_one_thread_is_left_alone():
    lib = FakeLibrary(2)
    serial = numpy_blas.SerialProducts(lib.get, lib.set, below=1000, above=0)
    with pytest.raises(ValueError, match="matmul"):
        serial.matmul(np.ones((3, 4)), np.ones((5, 6)))
    assert lib.threads == 2 and lib.changes == [1, 2]
    one = FakeLibrary(1)  # already one thread (OPENBLAS_NUM_THREADS=1): nothing to change
    assert numpy_blas.SerialProducts(one.get, one.set, below=1000, above=0).call(one.get) == 1 and one.changes == []


def test_overlapping_products_of_two_threads_restore_the_count_once_both_are_done():
    """The first to enter saves the count, the last to leave restores it: no thread puts
    back the 1 another one set."""
    lib = FakeLibrary(8)
    serial = numpy_blas.SerialProducts(lib.get, lib.set, below=1000, above=0)
    both_inside, second_done = threading.Barrier(2), threading.Event()
    seen = {}

    def first():
        def work():
            both_inside.wait(timeout=10)
            second_done.wait(timeout=10)
            return lib.get()
        seen["first"] = serial.call(work)

    def second():
        def work():
            both_inside.wait(timeout=10)
            return lib.get()
        seen["second"] = serial.call(work)
        seen["after second"] = lib.get()
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert seen == {"first": 1, "second": 1, "after second": 1}
    assert lib.threads == 8 and lib.changes == [1, 8]


def test_the_threshold_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(numpy_blas.SERIAL_PRODUCTS_ENV, raising=False)
    assert numpy_blas.serial_below() == numpy_blas.SERIAL_PRODUCTS
    monkeypatch.setenv(numpy_blas.SERIAL_PRODUCTS_ENV, "0")
    assert numpy_blas.serial_below() == 0 and numpy_blas.find_serial() is None
    for bad in ("-1", "many", "1e6"):
        monkeypatch.setenv(numpy_blas.SERIAL_PRODUCTS_ENV, bad)
        with pytest.raises(ValueError, match=f"PORTABLE_BP_SERIAL_PRODUCTS.*{bad!r}"):
            numpy_blas.serial_below()


class RecordingSerial(numpy_blas.SerialProducts):
    """SerialProducts over a fake library that records the shapes of what ran on one thread."""

    def __init__(self, below):
        self.lib = FakeLibrary(2)
        super().__init__(self.lib.get, self.lib.set, below=below, above=0)
        self.serial_calls = 0

    def call(self, fn, *args):
        self.serial_calls += 1
        return super().call(fn, *args)


@pytest.mark.parametrize("small", [True, False])
def test_every_product_of_the_numpy_step_goes_through_the_policy(small):
    """Forward (E7), backprop (E9), the weight gradient (E10) and plain SGD's step (E12,
    NumPy's product and the BLAS call) each run on one thread when small, and give the
    reference's numbers either way."""
    m, n_in, n_out = 6, 5, 4  # every product here is 120 multiply-adds
    serial = RecordingSerial(below=121 if small else 120)
    ops = NumpyOps(XP, numpy_blas.find(serial) if LIBRARY else None, serial)
    rng = np.random.default_rng(0)
    A, W, b, D = (rng.standard_normal(s) for s in ((m, n_in), (n_out, n_in), (n_out,), (m, n_out)))
    ref, relu = Ops(XP), ACTIVATIONS["relu"]
    checks = {
        "affine": lambda o: o.affine(A, W, b),
        "affine_activation": lambda o: o.affine_activation(A, W, b, relu),
        "backprop_delta": lambda o: o.backprop_delta(D, W, A, relu),
        "dense_grads": lambda o: o.dense_grads(DenseGrad(D, A))[0],
        "subtract_product": lambda o: o.subtract_product(W.copy(), D, A, 0.5),
        "sgd_dense": lambda o: o.sgd_dense(W.copy(), b.copy(), DenseGrad(D.copy(), A), 0.5)[0],
    }
    if LIBRARY:  # the BLAS call itself (the backend takes it for layers of MIN_WEIGHTS and more)
        gemm = numpy_blas.make_subtract_product(numpy_blas._gemm_functions(LIBRARY[0]), 0, serial)
        checks["BLAS gemm"] = lambda o: gemm(W.copy(), D, A, 0.5) if o is ops else ref.subtract_product(W, D, A, 0.5)
    for name, run in checks.items():
        before = serial.serial_calls
        np.testing.assert_allclose(run(ops), run(ref), rtol=1e-12, err_msg=name)
        assert serial.serial_calls - before == (1 if small else 0), name
        assert serial.lib.threads == 2, name


@needs_blas_threads
def test_the_real_library_runs_a_small_product_on_one_thread_and_gets_its_count_back():
    get_threads, set_threads = THREADS
    before = get_threads()
    set_threads(2)
    try:
        serial = numpy_blas.find_serial(below=1 << 20)
        assert serial is not None
        assert serial.call(get_threads) == 1 and get_threads() == 2
        ops = get("numpy").ops
        assert ops._serial is not None and ops.dropped == {}
        ops.affine(np.ones((8, 8)), np.ones((8, 8)), np.zeros(8))
        assert get_threads() == 2
    finally:
        set_threads(before)


def test_the_contention_benchmark_times_both_searches_and_reports_ratios():
    """benchmarks/blas_contention.py (a program, not a timed test): one search of each kind
    runs and scores, the contenders differ only in what they say, and the summary divides by
    portable_bp's time round by round."""
    pytest.importorskip("sklearn")
    from benchmarks import blas_contention as bench

    for which in ("portable_bp", "scikit-learn"):
        result = bench.grid_search(which, hidden=4, epochs=1)
        assert result["wall"] > 0 and result["cpu"] > 0 and 0 < result["best_score"] <= 1
    names = [name for name, _, _ in bench.contenders(one_thread=True)]
    assert names[0] == bench.OURS and len(set(names)) == 5
    assert dict((n, env) for n, _, env in bench.contenders(False))[f"{bench.OURS}, off"] == {
        numpy_blas.SERIAL_PRODUCTS_ENV: "0"}
    times = {bench.OURS: [{"wall": 2.0, "cpu": 1.0}, {"wall": 4.0, "cpu": 1.0}],
             "scikit-learn": [{"wall": 10.0, "cpu": 3.0}, {"wall": 4.0, "cpu": 2.0}]}
    summary = bench.summarize({"times": times})
    sk = summary["scikit-learn"]
    assert sk["ratio_range"] == [1.0, 5.0] and sk["ratio_to_ours_median"] == 3.0 and sk["wall_median"] == 7.0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # JAX's warning: the child runs no JAX
def test_a_child_forked_during_a_small_product_gets_the_thread_count_back():
    """The product runs in the parent's other thread, not in the forked child: the child puts
    the count back and can run products of its own (a fresh lock)."""
    import os

    lib = FakeLibrary(4)
    serial = numpy_blas.SerialProducts(lib.get, lib.set, below=1000, above=0)
    inside, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=serial.call, args=(lambda: (inside.set(), release.wait(10)),))
    worker.start()
    assert inside.wait(10) and lib.threads == 1
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when the count came back and a product runs
        ok = lib.threads == 4 and serial.call(lib.get) == 1 and lib.threads == 4
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    release.set()
    worker.join(10)
    assert os.WEXITSTATUS(status) == 0 and lib.threads == 4
