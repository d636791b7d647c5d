"""The benchmark's memory pass: its GPU bookkeeping, checked here against stand-ins for CuPy's
pool (the real pool needs a GPU; `benchmarks/gpu_check.sh` runs the real thing), and its
memory targets."""

import os
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # benchmarks/ is a program of the checkout, not an installed package
    sys.path.insert(0, REPO)
from benchmarks import harness, memory_child  # noqa: E402


class FakePool:
    """CuPy's MemoryPool as the memory pass uses it: malloc(size) returns a pointer that
    gives its bytes back when freed; used_bytes() and total_bytes() (held, never shrinking)."""

    def __init__(self):
        self.used, self.held = 0, 0

    def malloc(self, size):
        pool = self
        pool.used += size
        pool.held = max(pool.held, pool.used)

        class Pointer:
            def free(self):
                pool.used -= size

        return Pointer()

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.held


@pytest.fixture
def fake_cupy(monkeypatch):
    pool = FakePool()
    allocator = {}
    cuda = types.SimpleNamespace(set_allocator=lambda fn: allocator.update(fn=fn))
    module = types.SimpleNamespace(get_default_memory_pool=lambda: pool, cuda=cuda)
    monkeypatch.setitem(sys.modules, "cupy", module)
    return pool, allocator


def test_cupy_peak_in_use_is_tracked_through_every_allocation(fake_cupy):
    pool, allocator = fake_cupy
    first = pool.malloc(100)  # in use before tracking starts: part of the peak
    peak = memory_child.track_cupy_peak()
    malloc = allocator["fn"]
    a, b = malloc(300), malloc(200)   # 600 in use
    a.free(), b.free()                # 100
    c = malloc(400)                   # 500: below the peak
    first.free(), c.free()
    assert peak == [600]
    used, held = memory_child.gpu_bytes("cupy", peak)
    assert (used, held) == (600, 600)
    pool.malloc(700).free()  # without the tracking allocator the peak is not seen
    assert memory_child.gpu_bytes("cupy", peak) == (600, 700)


def test_memory_targets_compare_portable_bp_with_pytorch_per_config():
    def block(cfg, ours, theirs, key):
        return {"config": cfg, "dtype": "float32", "contenders": {
            "portable_bp[cupy]": {"memory": {key: ours}},
            "torch eager cuda": {"memory": {key: theirs}}}}

    blocks = [block("D", 105.0, 100.0, "gpu_mib"), block("E", 1013.0, 914.0, "gpu_mib"),
              block("B", None, 10.0, "gpu_mib")]  # B: memory pass failed, no verdict
    rows = {t["config"]: t for t in harness.check_targets("gpu", blocks, "portable_bp[cupy]")
            if "maximum" in t}
    assert set(rows) == {"D", "E"}
    assert rows["D"]["status"] == "PASS" and rows["D"]["ratio"] == pytest.approx(1.05)
    assert rows["E"]["status"] == "MISS" and rows["E"]["ratio"] == pytest.approx(1013 / 914)
