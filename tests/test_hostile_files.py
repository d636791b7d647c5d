"""Hostile data files: each refused with a ValueError naming the file (and the array), in
memory bounded by a small multiple of the legitimate data, inside a child process capped at
1 GiB of address space (so a reader that believed a file fails there, not on this machine)."""

import gzip
import io
import os
import struct
import zlib

import numpy as np
import pytest
from _hostile import GiB, bounded, deflate, deflate_zeros, gzip_bomb, gzip_member, npy_header, raw_zip

MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only: setrlimit, FIFOs, mode bits")


def idx_header(code, shape):
    return struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def refused(expression, path, limit=GiB, **kw):
    report = bounded(expression.replace("PATH", repr(str(path))), limit=limit, **kw)
    assert not report["ok"], report
    assert report["type"] == "ValueError", report
    assert str(path) in report["message"], report
    return report


# -- IDX --------------------------------------------------------------------------------------
def test_gzipped_idx_declaring_10_bytes_then_4gb_is_refused_after_11(tmp_path):
    path = tmp_path / "labels.idx1-ubyte.gz"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(idx_header(0x08, (10,)) + bytes(10)) + c.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(gzip_member(head + deflate_zeros(4 << 30)))
    assert path.stat().st_size < 5 * MiB
    report = refused("datasets.read_idx(PATH)", path)
    assert "longer than header says" in report["message"]
    assert report["seconds"] < 2 and report["peak"] < 4 * MiB


def test_idx_header_claiming_more_than_the_limit(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(idx_header(0x0E, (0xFFFFFFFF, 0xFFFFFFFF, 4)) + bytes(100))
    report = refused("datasets.read_idx(PATH)", path)
    claimed = (2**32 - 1) ** 2 * 4 * 8
    assert f"needs {claimed:,} bytes, more than the limit of 4,294,967,296" in report["message"]
    path.write_bytes(gzip.compress(path.read_bytes()))
    assert "more than the limit" in refused("datasets.read_idx(PATH)", path)["message"]


def test_gzipped_idx_claiming_3gb_but_holding_10_bytes_costs_10_bytes(tmp_path):
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (3 << 30,)) + bytes(10)))
    report = refused("datasets.read_idx(PATH)", path)
    assert "truncated IDX data" in report["message"] and "file has 10 bytes" in report["message"]
    assert report["peak"] < 4 * MiB


def test_idx_bytes_limit_keyword_and_environment(tmp_path):
    path = tmp_path / "img.idx"
    path.write_bytes(idx_header(0x08, (100, 10)) + bytes(1000))
    report = refused("datasets.read_idx(PATH, max_bytes=999)", path)
    assert "more than the limit of 999" in report["message"]
    report = refused("datasets.read_idx(PATH)", path, env={"PORTABLE_BP_MAX_BYTES": "999"})
    assert "PORTABLE_BP_MAX_BYTES" in report["message"]
    assert bounded(f"datasets.read_idx({str(path)!r}, max_bytes=1000).shape")["value"] == "(100, 10)"


# -- CSV --------------------------------------------------------------------------------------------
def text_bomb(block_text, total):
    """gzip of ``block_text`` repeated to ``total`` bytes (built from one full-flushed block)."""
    block = block_text * (MiB // len(block_text))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    return gzip_member(again * (total // len(block)) + c.flush())


def test_csv_gzip_bomb_of_rows_stops_at_the_limit(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(text_bomb(b"0,0,1\n", 4 << 30))  # 4 GiB of rows in a 6.4 MB file
    assert path.stat().st_size < 8 * MiB
    report = refused("datasets.read_csv(PATH, max_bytes=2 << 20)", path)
    assert "2,097,152" in report["message"]  # the text or its float64 table reaches the limit
    assert report["peak"] < 10 * MiB
    report = refused("datasets.load_file(PATH)", path, env={"PORTABLE_BP_MAX_BYTES": str(2 << 20)})
    assert "2,097,152" in report["message"] and report["peak"] < 10 * MiB


def test_csv_gzip_bomb_of_one_endless_line(tmp_path):
    path = tmp_path / "line.csv.gz"
    path.write_bytes(text_bomb(b"0,", 4 << 30))  # one line of two billion fields
    report = refused("datasets.read_csv(PATH, max_bytes=16 << 20)", path)
    assert "limit of 16,777,216" in report["message"] or "more than 16,777,216" in report["message"]
    assert report["peak"] < 100 * MiB
    path.write_bytes(gzip_bomb(b"1,", 4 << 30))  # a single field of four billion NUL characters
    report = refused("datasets.read_csv(PATH)", path)
    assert "longer than 131,072 characters" in report["message"]
    assert report["peak"] < 40 * MiB


def test_csv_memory_is_a_small_multiple_of_the_data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "table.csv"
    rows = rng.normal(size=(20000, 20))
    np.savetxt(path, np.column_stack([rows, rng.integers(0, 3, 20000)]), delimiter=",", fmt="%.6g")
    size = path.stat().st_size  # about 3.4 MB of text; X and y are 3.4 MB of float64
    report = bounded(f"datasets.read_csv({str(path)!r})[0].shape")
    assert report["ok"] and report["value"] == "(20000, 20)", report
    assert report["peak"] < 3 * size, (report["peak"], size)  # it was 24x
    path.write_bytes(gzip.compress(path.read_bytes(), 1))
    report = bounded(f"datasets.read_csv({str(path)!r})[0].shape")
    assert report["ok"] and report["peak"] < 3 * size, (report["peak"], size)


def test_dense_csv_memory_is_bounded_by_its_float64_table(tmp_path):
    path = tmp_path / "dense.csv"
    path.write_bytes(b"0,1,2,3,4,5,6,7,8,9\n" * 80000)  # 1.6 MB text, 6.4 MB of float64
    report = bounded(f"datasets.read_csv({str(path)!r})[0].shape")
    assert report["ok"] and report["peak"] < 2.5 * 8 * 800_000, report


# -- NPZ --------------------------------------------------------------------------------------
def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_npz_header_claiming_74_gib(tmp_path):
    path = tmp_path / "claims.npz"
    path.write_bytes(raw_zip([{"name": "X.npy", "data": npy_header("<f8", (100000, 100000)) + bytes(64)},
                              {"name": "y.npy", "data": npy(np.zeros(100000))}]))
    report = refused("datasets.read_npz(PATH)", path)
    assert "'X'" in report["message"] and report["peak"] < 4 * MiB
    report = refused("datasets.load_file(PATH)", path)
    assert "'X'" in report["message"] and report["peak"] < 4 * MiB


def test_npz_deflated_4gb_member(tmp_path):
    header = npy_header("<f8", (5, 3))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH) + deflate_zeros(4_000_000_000, block=1_000_000)
    rows = [{"name": "X.npy", "data": data, "method": 8, "size": len(header) + 4_000_000_000},
            {"name": "y.npy", "data": deflate(npy(np.zeros(5))), "method": 8, "size": len(npy(np.zeros(5))),
             "crc": zlib.crc32(npy(np.zeros(5)))}]
    path = tmp_path / "bomb.npz"
    path.write_bytes(raw_zip(rows))
    report = refused("datasets.read_npz(PATH)", path)
    assert "entry 'X'" in report["message"] and report["seconds"] < 2 and report["peak"] < 4 * MiB


def test_npz_float64_x_counts_against_the_limit(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((1000, 100), np.uint8), y=np.zeros(1000, np.uint8))
    report = refused("datasets.read_npz(PATH, max_bytes=500_000)", path)
    assert "'X' as float64 needs 800,000 bytes" in report["message"]


# -- paths that are not data files -------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["read_csv", "read_idx", "read_npz", "load_file"])
def test_directories_and_fifos_are_refused_without_blocking(tmp_path, reader):
    report = refused(f"datasets.{reader}(PATH)", tmp_path)
    assert "is a directory" in report["message"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    report = refused(f"datasets.{reader}(PATH)", fifo, timeout=30)
    assert "not a regular file" in report["message"]


def test_dev_zero_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    report = refused("datasets.load_file(PATH)", "/dev/zero", timeout=30)
    assert "not a regular file" in report["message"]
