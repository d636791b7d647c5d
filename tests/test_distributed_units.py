"""The pieces of ``portable_bp.distributed`` that need no second process: the launcher's
environment, the watchdog, host staging, and the MPI and NCCL communicators' logic against
stand-ins with mpi4py's, CuPy's and ``cupy.cuda.nccl``'s names (no MPI, no GPU here)."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from portable_bp.distributed import MPI, NCCL, DistributedError, Local, device_spec, get, launcher_size
from portable_bp.distributed.launch import check_world
from portable_bp.distributed.mpi import Watchdog
from portable_bp.distributed.staging import from_host, to_host
from portable_bp.distributed.sync import together


# -- the launcher's environment ------------------------------------------------------------
@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"PMI_SIZE": "4", "PMI_RANK": "1"}, (4, "PMI_SIZE")),
    ({"OMPI_COMM_WORLD_SIZE": "8"}, (8, "OMPI_COMM_WORLD_SIZE")),
    ({"SLURM_NTASKS": "4"}, None),  # a batch script's own process: not a launched step
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2"}, (2, "SLURM_STEP_NUM_TASKS")),
])
def test_launcher_size(env, expected):
    assert launcher_size(env) == expected


def test_a_world_of_one_under_a_launcher_of_four_is_a_clear_error():
    with pytest.raises(DistributedError, match=r"started 4 processes \(OMPI_COMM_WORLD_SIZE=4.*"
                                               r"different MPI installations.*MPICH Version: 4"):
        check_world(1, "MPICH Version: 4.2\nmore", {"OMPI_COMM_WORLD_SIZE": "4"})
    check_world(4, "MPICH", {"PMI_SIZE": "4"})
    check_world(1, "MPICH", {})


@pytest.mark.parametrize("spec,rank,expected", [
    ("cupy", 3, "cupy:3"), ("cupy:1", 3, "cupy:1"), ("torch:cuda", 2, "torch:cuda:2"),
    ("torch:cuda:0", 2, "torch:cuda:0"), ("jax:gpu", 1, "jax:gpu:1"), ("numpy", 5, "numpy"),
    ("torch", 1, "torch"),
])
def test_one_gpu_per_process(spec, rank, expected):
    assert device_spec(spec, rank) == expected


def test_communicators_by_name(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(var, raising=False)
    assert isinstance(get("none"), Local) and isinstance(get("auto"), Local)
    monkeypatch.setenv("PMI_SIZE", "1")
    assert isinstance(get("auto"), Local)
    with pytest.raises(ValueError, match="none, mpi, nccl, auto"):
        get("gloo")


# -- the watchdog --------------------------------------------------------------------------
def test_the_watchdog_aborts_a_wait_past_its_deadline_only():
    calls = []
    dog = Watchdog(0.4, lambda message, code: calls.append((message, code)))
    with dog.waiting("allreduce"):
        time.sleep(0.1)
    time.sleep(0.5)
    assert calls == []  # a short wait, and no wait at all, are fine
    with dog.waiting("allreduce"):
        time.sleep(1.6)
    assert len(calls) == 1 and "0.4 s in allreduce" in calls[0][0] and calls[0][1] == 1


# -- host staging --------------------------------------------------------------------------
def test_numpy_buffers_are_used_where_they_lie():
    a = np.arange(4.0)
    assert to_host(a) is a and to_host(a, copy=True) is not a
    assert to_host(a[::2]).flags.c_contiguous
    with pytest.raises(TypeError, match="backend="):
        to_host([1.0, 2.0])


def test_torch_cpu_tensors_share_their_memory_with_the_host_buffer():
    torch = pytest.importorskip("torch")
    from portable_bp.backends import get as get_backend

    backend = get_backend("torch")
    t = torch.arange(4, dtype=torch.float64)
    host = to_host(t, backend)
    host += 1  # what MPI's in-place sum does
    assert t.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert from_host(host, t, backend).data_ptr() == t.data_ptr()


# -- MPI's logic against a stand-in of mpi4py -------------------------------------------------
class FakeWorld:
    """mpi4py's Comm methods the communicators call; the sum doubles (2 ranks alike)."""

    def __init__(self, rank=0, size=2, local_rank=0):
        self.rank, self.size, self.local_rank, self.calls = rank, size, local_rank, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Split_type(self, kind, key):
        return types.SimpleNamespace(Get_rank=lambda: self.local_rank, Free=lambda: None)

    def Allreduce(self, send, recv, op):
        self.calls.append(("Allreduce", send, recv.__array_interface__["data"][0], op))
        recv *= 2

    def Iallreduce(self, send, recv, op):
        """The signal votes' sum (started before the buffer's, finished after it)."""
        recv *= 2
        return types.SimpleNamespace(Wait=lambda: None)

    def Bcast(self, buf, root):
        self.calls.append(("Bcast", root))
        buf[...] = 7

    def bcast(self, obj, root):
        self.calls.append(("bcast", root))
        return ("uid",) if obj is None else obj

    def allreduce(self, value):
        return value * self.size  # every rank alike

    def Barrier(self):
        self.calls.append(("Barrier",))

    def Abort(self, code):
        self.calls.append(("Abort", code))
        raise SystemExit(code)  # the real one never returns


FAKE_MPI = types.SimpleNamespace(COMM_WORLD=None, IN_PLACE="IN_PLACE", SUM="SUM", COMM_TYPE_SHARED=1,
                                 Get_library_version=lambda: "fake MPI")


def test_mpi_sums_numpy_buffers_in_place_and_never_writes_broadcast_sources():
    world = FakeWorld(rank=1, size=2, local_rank=1)
    comm = MPI(world, timeout=0, _mpi=FAKE_MPI)
    assert (comm.rank, comm.size, comm.local_rank) == (1, 2, 1)
    buf = np.ones(3)
    assert comm.allreduce(buf) is buf and buf.tolist() == [2.0, 2.0, 2.0]
    assert world.calls[0][:2] == ("Allreduce", "IN_PLACE") and world.calls[0][2] == buf.ctypes.data
    source = np.zeros(2)
    (received,) = comm.broadcast_arrays([source])
    assert source.tolist() == [0, 0] and received.tolist() == [7, 7]
    with pytest.raises(SystemExit):
        comm.abort("test", 3)
    assert world.calls[-1] == ("Abort", 3)


def test_mpi_of_one_process_communicates_nothing():
    world = FakeWorld(size=1)
    comm = MPI(world, _mpi=FAKE_MPI)
    buf = np.ones(2)
    comm.allreduce(buf), comm.barrier(), comm.broadcast_object(1), comm.abort("nothing")
    assert world.calls == [] and buf.tolist() == [1, 1]


# -- NCCL's logic against stand-ins of CuPy and cupy.cuda.nccl --------------------------------
class FakeArray:
    """A CuPy array as NCCL sees it: a device pointer, a length, a dtype, a device."""

    def __init__(self, values, device=0):
        self.host = np.asarray(values)
        self.data = types.SimpleNamespace(ptr=self.host.ctypes.data)
        self.size, self.dtype = self.host.size, self.host.dtype
        self.device = types.SimpleNamespace(id=device)

    def copy(self):
        return FakeArray(self.host.copy(), self.device.id)


def fake_cupy(gpus=2, done=True):
    entered = []

    class Device:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            entered.append(self.i)

        def __exit__(self, *exc):
            return False

    events = []

    class Event:  # a sum's event: done as the stream is
        def __init__(self, **kwargs):
            events.append(self)

        def record(self, on):
            self.stream = on

        @property
        def done(self):
            return self.stream.done

    stream = types.SimpleNamespace(ptr=77, done=done)
    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: gpus),
                                 Device=Device, get_current_stream=lambda: stream, Event=Event)
    return types.SimpleNamespace(cuda=cuda, entered=entered, stream=stream, events=events)


def fake_nccl():
    calls = []

    class Communicator:
        def __init__(self, n, uid, rank):
            calls.append(("init", n, uid, rank))

        def allReduce(self, *args):
            calls.append(("allReduce",) + args)

        def bcast(self, *args):
            calls.append(("bcast",) + args)

        def abort(self):
            calls.append(("abort",))

    return types.SimpleNamespace(NcclCommunicator=Communicator, get_unique_id=lambda: ("uid",),
                                 NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0, calls=calls)


def test_nccl_uses_the_local_ranks_gpu_and_sums_in_place_on_the_stream():
    cupy, nccl = fake_cupy(), fake_nccl()
    comm = NCCL(FakeWorld(rank=1, size=2, local_rank=1), timeout=0, cupy=cupy, nccl=nccl, _mpi=FAKE_MPI)
    assert comm.backend_spec == "cupy:1" and cupy.entered == [1]
    assert nccl.calls == [("init", 2, ("uid",), 1)]  # rank 0's id, received over MPI
    buf = FakeArray(np.ones(5, dtype=np.float32), device=1)
    assert comm.allreduce(buf) is buf
    assert nccl.calls[-1] == ("allReduce", buf.data.ptr, buf.data.ptr, 5, 7, 0, 77)
    (copy,) = comm.broadcast_arrays([FakeArray(np.zeros(2), device=1)])
    assert nccl.calls[-1] == ("bcast", copy.data.ptr, 2, 8, 0, 77)
    comm.wait()  # the stream is done: returns at once


def test_nccl_sums_host_buffers_over_mpi_so_the_set_up_checks_agree():
    """sync.together sums its NumPy error flags with comm.allreduce: NCCL, which reads
    device memory only, hands host buffers to MPI (it used to refuse them, so every
    multi-rank NCCL fit failed in its set-up)."""
    world = FakeWorld(rank=0, size=2, local_rank=0)
    comm = NCCL(world, timeout=0, cupy=fake_cupy(), nccl=fake_nccl(), _mpi=FAKE_MPI)
    np.testing.assert_array_equal(comm.allreduce(np.ones(2)), [2.0, 2.0])
    assert world.calls[-1][0] == "Allreduce"
    assert together(comm, lambda: "checked") == "checked"


def test_nccl_refuses_what_it_cannot_sum():
    cupy, nccl = fake_cupy(), fake_nccl()
    comm = NCCL(FakeWorld(rank=0, size=2, local_rank=0), timeout=0, cupy=cupy, nccl=nccl, _mpi=FAKE_MPI)
    with pytest.raises(ValueError, match="GPU 0, but the buffer is on GPU 1"):
        comm.allreduce(FakeArray(np.ones(2), device=1))
    with pytest.raises(TypeError, match="float16"):
        comm.allreduce(FakeArray(np.ones(2, dtype=np.float16)))
    with pytest.raises(DistributedError, match="3 process.*this machine shows 2"):
        NCCL(FakeWorld(rank=2, size=3, local_rank=2), timeout=0, cupy=fake_cupy(2), nccl=fake_nccl(),
             _mpi=FAKE_MPI)


def test_nccl_wait_aborts_nccl_and_the_job_past_its_deadline():
    cupy, nccl = fake_cupy(done=False), fake_nccl()
    world = FakeWorld(rank=0, size=2)
    comm = NCCL(world, timeout=0.2, cupy=cupy, nccl=nccl, _mpi=FAKE_MPI)
    with pytest.raises(SystemExit):
        comm.wait()
    assert ("abort",) in nccl.calls and world.calls[-1] == ("Abort", 1)


def test_the_package_names_numpy_only_for_host_buffers_and_cupy_only_in_nccl():
    """The distributed package is host-side communication code: NumPy (host buffers for
    MPI) in staging.py alone, CuPy (its NCCL) imported inside nccl.py's functions alone;
    everything else reaches arrays through the network's backend."""
    import pathlib
    import re

    import portable_bp.distributed as dist

    pattern = re.compile(r"^([ \t]*)(import|from)[ \t]+(numpy|cupy|torch|jax)\b", re.M)
    found = {}
    for path in pathlib.Path(dist.__file__).parent.glob("*.py"):
        for indent, _, lib in pattern.findall(path.read_text()):
            found.setdefault(path.name, set()).add((lib, bool(indent)))
    assert found == {"staging.py": {("numpy", False)}, "nccl.py": {("cupy", True)}}
