"""Hostile checkpoint files: refused with a ValueError naming the file and the entry, in
bounded memory and time (each case runs in a child process capped at 1 GiB of address
space, so a reader that believed the file would fail there, not exhaust this machine)."""

import io
import json
import os
import zipfile
import zlib

import numpy as np
import pytest
from _hostile import GiB, bounded, deflate_zeros, npy_header, npz_entries, raw_zip

import portable_bp as pb
from portable_bp import checkpoint

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="POSIX only: setrlimit, FIFOs, mode bits"),
              pytest.mark.xdist_group("hostile_checkpoints")]  # one worker makes the module's 4 GB of zeros


@pytest.fixture
def good(tmp_path):
    net = pb.Network([3, 5, 3], loss="cross_entropy", dtype="float64", seed=7)
    net.fit(np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 3, epochs=1, optimizer="adam")
    path = tmp_path / "good"
    net.save(path)
    return path


def stored(entries, **replace):
    """raw_zip entries (stored) from ``{name: bytes}`` with some replaced or added."""
    merged = {**entries, **replace}
    return [{"name": n, "data": d} for n, d in merged.items()]


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def meta_bytes(entries, **config):
    meta = json.loads(str(np.load(io.BytesIO(entries["meta.npy"]))[()]))
    meta["config"].update(config)
    return npy_bytes(np.array(json.dumps(meta)))


def refused_in_child(path, expression="checkpoint._read(PATH)", limit=GiB, **kw):
    report = bounded(expression.replace("PATH", repr(str(path))), limit=limit, **kw)
    assert not report["ok"], report
    assert report["type"] == "ValueError", report
    assert repr(str(path)) in report["message"]
    return report


# -- headers that claim more than the file holds ----------------------------------------------
def test_entry_claiming_a_74_gib_array_is_a_value_error_without_allocating(tmp_path, good):
    entries = npz_entries(good)
    huge = npy_header("<f8", (100000, 100000)) + bytes(64)
    path = tmp_path / "claims"
    path.write_bytes(raw_zip(stored(entries, **{"W0.npy": huge})))
    report = refused_in_child(path)  # the saved config expects (5, 3)
    assert "'W0' has shape (100000, 100000), expected (5, 3)" in report["message"]
    assert report["peak"] < 16 << 20

    # the config agrees with the claim: the zip directory's size for the entry does not
    entries["meta.npy"] = meta_bytes(entries, sizes=[100000, 100000, 3])
    path.write_bytes(raw_zip(stored(entries, **{"W0.npy": huge})))
    report = refused_in_child(path)
    assert "entry 'W0'" in report["message"] and "80,000,000,128" in report["message"]
    assert report["peak"] < 16 << 20

    # ... and the directory agrees too (zip64): the byte limit refuses it
    rows = stored(entries, **{"W0.npy": huge})
    for row in rows:
        if row["name"] == "W0.npy":
            row["size"] = len(npy_header("<f8", (100000, 100000))) + 8 * 10**10
    path.write_bytes(raw_zip(rows))
    report = refused_in_child(path)
    assert "entry 'W0' holds 80,000,000,000 bytes" in report["message"] and "limit" in report["message"]
    assert report["peak"] < 16 << 20


@pytest.fixture(scope="module")
def four_gb_of_zeros():
    return deflate_zeros(4_000_000_000, block=1_000_000)  # 3.9 MB


def with_deflated_w0(good, header, zeros):
    """The archive's entries with W0 replaced by ``header`` followed by 4 GB of deflated zeros."""
    rows = stored(npz_entries(good))
    for row in rows:
        if row["name"] == "W0.npy":
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
            row.update(data=head + zeros, method=8, size=len(header) + 4_000_000_000)
    return rows


def test_deflated_4gb_entry_with_the_wrong_shape_is_refused_before_inflating(tmp_path, good, four_gb_of_zeros):
    rows = with_deflated_w0(good, npy_header("<f8", (20000, 25000)), four_gb_of_zeros)
    path = tmp_path / "bomb"
    path.write_bytes(raw_zip(rows))
    assert path.stat().st_size < 5_000_000
    report = refused_in_child(path)
    assert "'W0' has shape (20000, 25000), expected (5, 3)" in report["message"]
    assert report["seconds"] < 5 and report["peak"] < 16 << 20


def test_deflated_4gb_entry_with_the_right_header_is_refused_by_its_size(tmp_path, good, four_gb_of_zeros):
    header = npy_header("<f8", (5, 3))
    rows = with_deflated_w0(good, header, four_gb_of_zeros)
    path = tmp_path / "bomb"
    path.write_bytes(raw_zip(rows))
    report = refused_in_child(path)
    assert "truncated or corrupt: entry 'W0'" in report["message"]
    assert report["seconds"] < 5 and report["peak"] < 16 << 20

    # a directory that lies (declares the 248 bytes W0 should have): zipfile stops there
    for row in rows:
        if row["name"] == "W0.npy":
            row.update(size=len(header) + 120, crc=zlib.crc32(header + bytes(120)))
    path.write_bytes(raw_zip(rows))
    report = bounded(f"checkpoint._read({str(path)!r})['params'][0][0].tolist()")
    assert report["ok"], report  # what the directory describes is a valid (all-zero) W0
    assert report["value"] == repr([[0.0] * 3] * 5)
    assert report["seconds"] < 5 and report["peak"] < 16 << 20


def test_max_bytes_keyword_and_environment_variable(good):
    size = good.stat().st_size
    assert checkpoint._read(good, max_bytes=size)["epochs_trained"] == 1
    with pytest.raises(ValueError, match=r"entry '\w+' holds [\d,]+ bytes .* limit") as err:
        checkpoint._read(good, max_bytes=200)
    assert repr(str(good)) in str(err.value)
    report = refused_in_child(good, env={"PORTABLE_BP_MAX_BYTES": "200"})
    assert "PORTABLE_BP_MAX_BYTES" in report["message"]
    report = bounded(f"checkpoint._read({str(good)!r})", env={"PORTABLE_BP_MAX_BYTES": "lots"})
    assert report["type"] == "ValueError" and "PORTABLE_BP_MAX_BYTES='lots'" in report["message"]
    for bad in (0, -1, 2.5, True, "1"):
        with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
            checkpoint._read(good, max_bytes=bad)


def test_read_holds_each_array_once(tmp_path):
    """_read's peak is the arrays themselves (each entry read once into its final array)."""
    net = pb.Network([400, 1500, 10], loss="cross_entropy", dtype="float64", seed=0)
    net.fit(np.zeros((4, 400)), np.arange(4), epochs=1, optimizer="adam")
    path = tmp_path / "big"
    net.save(path)
    size = path.stat().st_size  # about 14 MB: parameters and two Adam slots
    report = bounded(f"len(checkpoint._read({str(path)!r})['slots'])")
    assert report["ok"] and report["value"] == "2", report
    assert report["peak"] < 1.1 * size + (1 << 20), (report["peak"], size)


# -- archives that are hard on zipfile ---------------------------------------------------------
def test_zip_with_a_huge_directory_is_refused_before_it_is_parsed(tmp_path):
    rows = [{"name": f"{i:030d}", "data": b""} for i in range(60000)]
    path = tmp_path / "many"
    path.write_bytes(raw_zip(rows))  # a 4.6 MB directory: 60000 entries
    report = refused_in_child(path)
    assert "zip directory of" in report["message"] and "too many entries" in report["message"]
    assert report["peak"] < 16 << 20


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compression_methods_that_inflate_without_bound_are_refused(tmp_path, good, method):
    path = tmp_path / "packed"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", compression=method) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(ValueError, match=f"'meta' uses zip compression method {method}"):
        checkpoint._read(path)


def test_an_entry_stored_twice_is_refused(tmp_path, good):
    entries = npz_entries(good)
    rows = stored(entries) + [{"name": "meta.npy", "data": entries["meta.npy"]}]
    path = tmp_path / "twice"
    path.write_bytes(raw_zip(rows))
    with pytest.raises(ValueError, match="entry 'meta' is stored 2 times"):
        checkpoint._read(path)
    rows = stored(entries) + [{"name": "W0", "data": entries["W0.npy"]}]  # "W0" and "W0.npy"
    path.write_bytes(raw_zip(rows))
    with pytest.raises(ValueError, match="entry 'W0' is stored 2 times"):
        checkpoint._read(path)


@pytest.mark.parametrize("header,match", [
    (npy_header("<f8", (5, 3))[:8] + b"\xff\xff", "header of 65,535 bytes is longer"),
    (b"\x93NUMPY\x07\x00", "unsupported .npy format version 7.0"),
    (npy_header("<c16", (5, 3)), "has dtype complex128, expected float64"),
    (npy_header("O", (5, 3)), "entry 'W0' is an object array"),
    (npy_header("V8", (5, 3)), "structured or raw dtype"),
    (npy_header("<U0", (5, 3)), "zero-sized elements"),
    (npy_header("<f8", (5, -3)), "invalid shape"),
    (npy_header("<f8", (1,) * 40), "invalid shape"),
    (npy_header("<f8", (5, 3)).replace(b"False", b"0    "), "fortran_order=0"),
    (npy_header("<f8", (5, 3)).replace(b"'shape'", b"'shope'"), "not a valid .npy header"),
    (npy_header("<f8", (5, 3)).replace(b"{", b"(" * 70, 1), "not a valid .npy header"),
    (npy_header("nonsense", (5, 3)), "unknown dtype 'nonsense'"),
], ids=["long-header", "version-7", "complex", "object", "void", "U0", "negative-dim", "40-dims",
        "fortran-0", "misspelt-key", "nested-parens", "unknown-descr"])
def test_bad_npy_headers(tmp_path, good, header, match):
    path = tmp_path / "bad"
    path.write_bytes(raw_zip(stored(npz_entries(good), **{"W0.npy": header + bytes(120)})))
    with pytest.raises(ValueError, match=match) as err:
        checkpoint._read(path)
    assert repr(str(path)) in str(err.value)


def test_boolean_bytes_other_than_0_and_1_are_refused(tmp_path):
    from portable_bp._safe_io import NpzArchive

    path = tmp_path / "bools.npz"
    path.write_bytes(raw_zip([{"name": "y.npy", "data": npy_header("|b1", (3,)) + b"\x00\x01\x02"}]))
    with NpzArchive(path, str(path)) as npz, npz.member("y") as member, \
            pytest.raises(ValueError, match="bytes other than 0 and 1"):
        member.read()


def test_trailing_bytes_after_the_array_are_refused(tmp_path, good):
    entries = npz_entries(good)
    path = tmp_path / "long"
    path.write_bytes(raw_zip(stored(entries, **{"W0.npy": entries["W0.npy"] + b"\0"})))
    with pytest.raises(ValueError, match="truncated or corrupt: entry 'W0'"):
        checkpoint._read(path)


def test_meta_that_nests_too_deep_for_json(tmp_path, good):
    entries = npz_entries(good)
    path = tmp_path / "deep"
    path.write_bytes(raw_zip(stored(entries, **{"meta.npy": npy_bytes(np.array("[" * 100000))})))
    with pytest.raises(ValueError, match="'meta' is not valid JSON"):
        checkpoint._read(path)


# -- paths that are not regular files ------------------------------------------------------------
def test_directory_and_fifo_are_refused_without_blocking(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        pb.load(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    report = refused_in_child(fifo, "pb.load(PATH)", timeout=30)  # a blocking open would time out
    assert "not a regular file" in report["message"]


def test_symlink_to_a_checkpoint_loads(tmp_path, good):
    link = tmp_path / "link"
    link.symlink_to(good)
    assert pb.load(link).epochs_trained == 1


# -- metadata that asks for more than the file holds ------------------------------------------
def test_meta_listing_more_layers_than_the_file_has_entries(tmp_path, good):
    entries = npz_entries(good)
    entries["meta.npy"] = meta_bytes(entries, sizes=[1] * 1_000_000)  # 8 MB of JSON: a million layers
    path = tmp_path / "layers"
    path.write_bytes(raw_zip(stored(entries)))
    report = refused_in_child(path)
    assert "'meta' holds" in report["message"] and report["peak"] < 64 << 20
    entries["meta.npy"] = meta_bytes(entries, sizes=[1] * 100_000)
    path.write_bytes(raw_zip(stored(entries)))
    report = refused_in_child(path)
    assert "metadata lists 99,999 layers, but the file has only 13 entries" in report["message"]


def test_each_entry_is_found_without_scanning_the_directory(tmp_path, good, monkeypatch):
    """A checkpoint reads every entry: scanning all of them per lookup made a file of
    40000 small entries cost 40000**2 comparisons. The directory is indexed once."""
    layers = 2000
    entries = npz_entries(good)
    meta = json.loads(str(np.load(io.BytesIO(entries["meta.npy"]))[()]))
    meta["config"]["sizes"], meta["optimizer"] = [1] * (layers + 1), None
    rows = {"meta.npy": npy_bytes(np.array(json.dumps(meta)))}
    one, bias = npy_bytes(np.ones((1, 1))), npy_bytes(np.ones(1))
    for l in range(layers):
        rows[f"W{l}.npy"], rows[f"b{l}.npy"] = one, bias
    path = tmp_path / "deep"
    path.write_bytes(raw_zip(stored(rows)))
    scans = []
    infolist = zipfile.ZipFile.infolist
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: scans.append(1) or infolist(self))
    assert len(checkpoint._read(path)["params"]) == layers
    assert len(scans) <= 1
