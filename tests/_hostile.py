"""Builders of hostile files for the reader tests, and a child process with bounded memory.

Everything is written here from the formats' specifications, independently of the
readers under test: raw zip archives (any declared sizes, stored or deflated), deflate
and gzip streams that inflate to gigabytes yet take milliseconds to build, ``.npy``
headers that claim whatever shape is asked for.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GiB = 1 << 30


def npy_header(descr, shape, fortran=False):
    """A version 1.0 ``.npy`` header (magic to newline) declaring ``descr`` and ``shape``."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def deflate_zeros(nbytes, block=1 << 20):
    """A raw deflate stream of ``nbytes`` zero bytes (``nbytes`` a multiple of ``block``).

    One block is compressed and fully flushed (which resets the compressor, so the
    next block cannot refer back); that self-contained piece is then repeated.
    """
    assert nbytes % block == 0 and nbytes >= block
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    return first + again * (nbytes // block - 1) + c.flush()


def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def gzip_member(deflated, crc=0, size=0):
    """A gzip member around a raw deflate stream (CRC and size as given: bombs lie anyway)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflated + struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip_bomb(prefix, zeros):
    """gzip of ``prefix`` followed by ``zeros`` zero bytes, with an honest CRC only when small."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    return gzip_member(head + deflate_zeros(zeros))


def raw_zip(entries):
    """A zip archive of ``entries``: dicts with ``name``, ``data`` (as stored) and optional
    ``method`` (0 stored, 8 deflated), ``size`` (declared uncompressed size) and ``crc``.

    Sizes of 4 GiB and more get zip64 extra fields, as zipfile expects them.
    """
    local, central = bytearray(), bytearray()
    for e in entries:
        name, data = e["name"].encode(), e["data"]
        size = e.get("size", len(data))
        crc = e.get("crc", zlib.crc32(data) if e.get("method", 0) == 0 else 0)
        big = size >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if big else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (len(data), size)
        offset = len(local)
        fields = (20, 0, e.get("method", 0), 0, 0, crc, *sizes, len(name), len(extra))
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name + extra + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, *fields, 0, 0, 0, 0, offset) + name + extra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return bytes(local + central + end)


def npz_entries(path):
    """``{name: raw member bytes}`` of an existing ``.npz`` (read with zipfile, not NumPy)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


CHILD = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    import numpy as np
    import portable_bp as pb
    from portable_bp import checkpoint, datasets
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = eval(sys.argv[2])
        out = {"ok": True, "value": repr(value)[:300]}
    except BaseException as exc:
        out = {"ok": False, "type": "ValueError" if isinstance(exc, ValueError) else type(exc).__name__,
               "exact_type": type(exc).__name__, "message": str(exc)[:2000]}
    out["peak"] = tracemalloc.get_traced_memory()[1]
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))
""")


def bounded(expression, limit=GiB, env=None, timeout=120):
    """Evaluate ``expression`` in a child process whose address space is capped at ``limit``.

    The child imports numpy, portable_bp, ``checkpoint`` and ``datasets`` first, then sets
    the cap, so a reader that tries to allocate what a hostile file claims fails there
    (MemoryError) instead of exhausting this machine. Returns the child's report:
    ``ok``, ``value`` or ``type`` (any ValueError is reported as "ValueError")/``message``,
    tracemalloc ``peak`` and ``seconds``.
    """
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                 "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-c", CHILD, str(limit), expression], env=child_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
