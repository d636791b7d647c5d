"""Fuzzing every reader with hypothesis: random and mutated files (truncations, bit flips,
header-field and zip-directory mutations), plain and gzip.

The property, for IDX, CSV, NPZ and checkpoint files alike: the reader returns a valid
result or raises a ValueError naming the file; never another exception, never a
MemoryError, and its traced memory stays under a small bound. The budget is fixed and
derandomized (the same examples on every run) so the suite is repeatable in CI; the
address space of this process is capped at its current size plus 1 GiB meanwhile, so a
regression that believed a hostile header fails here instead of exhausting the machine.
"""

import gzip
import io
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp import datasets as ds

try:
    import resource
except ImportError:  # not POSIX: only the traced-memory bound applies
    resource = None

# 80 derandomized examples per test: about 14 s for the six on a loaded 2-core machine, and
# enough to catch what the previous readers got wrong (CSV overflow, 0-sample NPZ,
# checkpoint headers claiming huge arrays).
FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PEAK_LIMIT = 48 << 20  # bytes traced during one read of a file of at most a few kilobytes


# one worker runs the module under its address-space cap (and makes its fixtures once)
pytestmark = pytest.mark.xdist_group("fuzz_readers")


@pytest.fixture(scope="module", autouse=True)
def capped_address_space():
    """Cap this process's address space at its current size plus 1 GiB for the module."""
    try:
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        size = None
    if resource is None or size is None:
        yield  # not Linux: the traced-memory bound below still applies
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + (1 << 30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def outcome(read, path, data, named=None):
    """Write ``data`` to ``path`` and read it: the result, or None after a proper ValueError."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        return read(path)
    except ValueError as exc:
        assert (named or str(path)) in str(exc), exc
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_LIMIT, f"{peak} bytes traced reading {len(data)} bytes"


# -- mutations ------------------------------------------------------------------------------------
@st.composite
def mutated(draw, data, fields=()):
    """``data`` with a few mutations: bit flips, byte overwrites, 32-bit field overwrites at
    ``fields`` (offsets of header fields), a cut, or junk appended."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "field", "cut", "append"]))
        if not b:
            break
        if kind == "flip":
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif kind == "field" and fields:
            i = draw(st.sampled_from(list(fields)))
            value = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1))
            b[i:i + 4] = struct.pack("<I", value)[: max(0, min(4, len(b) - i))]
        elif kind == "cut":
            del b[draw(st.integers(0, len(b) - 1)):]
        elif kind == "append":
            b += draw(st.binary(min_size=1, max_size=64))
    return bytes(b)


# -- IDX ------------------------------------------------------------------------------------------
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_files(draw):
    code = draw(st.sampled_from(sorted(IDX_CODES)))
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * np.dtype(IDX_CODES[code]).itemsize,
                         max_size=n * np.dtype(IDX_CODES[code]).itemsize))
    good = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + raw
    fields = range(0, 4 + 4 * len(shape), 2)  # magic and dimension sizes (overwritten 4 bytes at a time)
    data = draw(mutated(good, fields) | st.just(good) | st.binary(max_size=64))
    return gzip.compress(data) if draw(st.booleans()) else data, good == data


@FUZZ
@given(file=idx_files(), gz_flip=st.integers(0, 10**6))
def test_fuzz_idx(folder, file, gz_flip):
    data, intact = file
    array = outcome(ds.read_idx, folder / "f.idx", data)
    if intact:
        assert array is not None
    if data[:2] == b"\x1f\x8b" and len(data) > 12:  # damage inside the gzip stream as well
        broken = bytearray(data)
        broken[10 + gz_flip % (len(data) - 10)] ^= 0x55
        outcome(ds.read_idx, folder / "g.idx", bytes(broken))


@FUZZ
@given(images=idx_files(), labels=idx_files())
def test_fuzz_idx_pair_and_load_file(folder, images, labels):
    (folder / "lab.idx").write_bytes(labels[0])
    result = outcome(lambda p: ds.load_file(p, labels=folder / "lab.idx"), folder / "img.idx", images[0],
                     named=str(folder))
    if result is not None:
        X, y = result
        assert X.ndim == 2 and X.dtype == np.float64 and np.isfinite(X).all() and len(X) == len(y) > 0


# -- CSV ------------------------------------------------------------------------------------------
TOKENS = ["0", "1", "-2.5", "3e2", "1e400", "nan", "inf", "", " ", "x", "label", '"', '"1"', '"a,b"',
          "9007199254740993", "1e19", "\ufeff", "\x00", "١", "1_0"]


@st.composite
def csv_texts(draw):
    width = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(st.sampled_from(TOKENS), min_size=width, max_size=width + 1),
                         min_size=0, max_size=6))
    sep = draw(st.sampled_from([",", ";", "\t", " "]))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(sep.join(row) for row in rows) + draw(st.sampled_from(["", end]))
    data = text.encode("utf-8", "surrogatepass")
    data = draw(st.just(data) | mutated(data))
    return (gzip.compress(data) if draw(st.booleans()) else data), sep


@FUZZ
@given(file=csv_texts(), header=st.sampled_from(["auto", True, False]),
       target=st.sampled_from([-1, 0, 1, "label", "x"]), whitespace=st.booleans())
def test_fuzz_csv(folder, file, header, target, whitespace):
    data, sep = file
    delimiter = None if whitespace else sep

    def read(path):
        return ds.read_csv(path, target=target, header=header, delimiter=delimiter)

    result = outcome(read, folder / "t.csv", data)
    if result is not None:
        X, y = result
        assert X.ndim == 2 and X.dtype == np.float64 and np.isfinite(X).all()
        assert y.ndim == 1 and len(y) == len(X) > 0
        if y.dtype.kind == "U":  # text labels: none empty
            assert all(label.strip() for label in y.tolist())
        else:
            assert y.dtype in (np.int64, np.float64) and np.isfinite(y).all()


@FUZZ
@given(file=csv_texts())
def test_fuzz_load_file_text(folder, file):
    result = outcome(ds.load_file, folder / "d.txt", file[0])
    if result is not None:
        assert result[0].ndim == 2 and len(result[0]) == len(result[1])


# -- NPZ ------------------------------------------------------------------------------------------
DTYPES = ["<f8", ">f4", "<f2", "<i8", "<u8", "|u1", "|b1", "<c16", "<U3", "<M8[s]"]


def header_fields(data):
    """Offsets worth overwriting: .npy header texts, and sizes/CRC/offsets in the zip directory."""
    fields = []
    at = data.find(b"\x93NUMPY")
    while at != -1:
        fields += range(at + 8, min(at + 90, len(data)), 7)
        at = data.find(b"\x93NUMPY", at + 1)
    at = data.find(b"PK\x01\x02")
    while at != -1:
        fields += [at + 16, at + 20, at + 24, at + 28, at + 42]  # crc, sizes, name length, offset
        at = data.find(b"PK\x01\x02", at + 1)
    end = data.rfind(b"PK\x05\x06")
    if end != -1:
        fields += [end + 8, end + 12, end + 16]  # entry counts, directory size, directory offset
    return fields


@st.composite
def npy_headers_rewritten(draw, data):
    """``data`` (a zip) with one entry's ``.npy`` header rewritten: another dtype and shape,
    huge ones included, padded to the header's length; the archive is rebuilt so its CRCs
    are right, as in a file crafted on purpose (a random mutation is mostly caught by the
    CRC, which zipfile checks as soon as a small entry is read)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    name = draw(st.sampled_from(sorted(entries)))
    member = entries[name]
    if not member.startswith(b"\x93NUMPY\x01\x00"):
        return data
    (length,) = struct.unpack("<H", member[8:10])
    descr = draw(st.sampled_from(DTYPES + ["|O", "<V8", "<f16", "<U0", "<i8"]))
    dims = st.sampled_from([10**5, 2**31, 2**32 - 1, 2**63, 10**30]) | st.integers(0, 5)
    shape = tuple(draw(st.lists(dims, min_size=1, max_size=3)))
    text = f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape!r}, }}"
    if len(text) + 1 > length:
        return data
    entries[name] = member[:10] + text.encode().ljust(length - 1) + b"\n" + member[10 + length:]
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for entry, content in entries.items():
            z.writestr(entry, content)
    return buf.getvalue()


@st.composite
def npz_files(draw):
    n = draw(st.integers(0, 4))
    arrays = {}
    for key in draw(st.sets(st.sampled_from(["X", "y", "Z"]), min_size=1)):
        dtype = draw(st.sampled_from(DTYPES))
        shape = (n,) + tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
        if draw(st.integers(0, 9)) == 0:
            shape = ()
        arrays[key] = np.zeros(shape, dtype)
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
    good = buf.getvalue()
    return draw(st.just(good) | mutated(good, header_fields(good)) | npy_headers_rewritten(good))


@FUZZ
@given(data=npz_files())
def test_fuzz_npz(folder, data):
    result = outcome(ds.read_npz, folder / "d.npz", data)
    if result is not None:
        X, y = result
        assert X.ndim == 2 and X.dtype == np.float64 and np.isfinite(X).all() and len(X) == len(y) > 0
    outcome(ds.load_file, folder / "e.bin", data)


# -- checkpoints ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved():
    net = pb.Network([3, 4, 2], loss="cross_entropy", dtype="float32", seed=1)
    net.fit(np.random.default_rng(0).normal(size=(8, 3)), np.arange(8) % 2, epochs=1, optimizer="adam")
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "ck"
        net.save(path)
        yield path.read_bytes()


@FUZZ
@given(seed=st.data())
def test_fuzz_checkpoint(folder, saved, seed):
    data = seed.draw(mutated(saved, header_fields(saved)) | npy_headers_rewritten(saved))
    path = folder / "ck"
    ck = outcome(checkpoint._read, path, data, named=repr(str(path)))
    if ck is not None:
        assert set(ck) == {"config", "epochs_trained", "steps_trained", "backend", "optimizer", "params", "slots",
                           "history", "data", "early_stopping"}
        for W, b in ck["params"]:
            assert W.dtype == np.float32 and b.dtype == np.float32

