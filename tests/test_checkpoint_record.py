"""What a checkpoint records besides the network: the training history and the data
description (class names, feature names, standardizer), saved, read back and checked."""


import numpy as np
import pytest
from train_helpers import checkpoint_data, checkpoint_net, meta_with, rewrite

import portable_bp as pb
from portable_bp import checkpoint


def saved(tmp_path, epochs=3):
    X, Z = checkpoint_data()
    net = checkpoint_net()
    history = net.fit(X, Z, epochs=epochs, validation_data=(X, Z))
    data = {"meta": {"classes": ["a", "b"], "note": [1, 2.5]},
            "arrays": {"mean": np.arange(net.sizes[0], dtype=float), "scale": np.ones(net.sizes[0])}}
    path = tmp_path / "m.npz"
    checkpoint.save(net, path, history=history, data=data)
    return path, history, data, net


def test_history_and_data_round_trip(tmp_path):
    path, history, data, net = saved(tmp_path)
    record = checkpoint.read_record(path)
    assert record["history"]["epochs"] == history.epochs == [0, 1, 2]
    assert record["history"]["values"] == history.history  # floats exactly, every metric
    assert record["data"]["meta"] == data["meta"]
    for key in ("mean", "scale"):
        np.testing.assert_array_equal(record["data"]["arrays"][key], data["arrays"][key])
    assert pb.load(path).epochs_trained == 3  # the network reads as before


def test_a_file_without_them_reads_as_empty(tmp_path):
    net = checkpoint_net()
    net.save(tmp_path / "plain")
    assert checkpoint.read_record(tmp_path / "plain") == {"history": {"epochs": [], "values": {}}, "data": None}


@pytest.mark.parametrize("changes, match", [
    (dict(history__epochs=np.array([0, 2, 1])), "must increase from 0 up to epochs_trained - 1"),
    (dict(history__epochs=np.array([0, 1, 3])), "must increase from 0 up to epochs_trained - 1"),
    (dict(history__epochs=np.array([0.0, 1.0, 2.0])), "'history__epochs' must be a 1-D int64 array"),
    (dict(history__loss=None), "missing array 'history__loss'"),
    (dict(history__loss=np.zeros(2)), r"'history__loss' has shape \(2,\), expected \(3,\)"),
    (dict(data__mean=np.zeros(7)), r"'data__mean' has shape \(7,\)"),
])
def test_damaged_records_are_named(tmp_path, changes, match):
    path = saved(tmp_path)[0]
    rewrite(path, **changes)
    with pytest.raises(ValueError, match=match):
        checkpoint.read_record(path)
    with pytest.raises(ValueError, match=match):
        pb.load(path)


@pytest.mark.parametrize("fields, match", [
    (dict(history="loss"), "metadata 'history' is malformed"),
    (dict(history=["../x"]), "metadata 'history' is malformed"),
    (dict(data=[1]), "metadata 'data' must be an object"),
])
def test_damaged_record_metadata_is_named(tmp_path, fields, match):
    path = saved(tmp_path)[0]
    rewrite(path, meta=meta_with(path, **fields))
    with pytest.raises(ValueError, match=match):
        checkpoint.read_record(path)


def test_what_cannot_be_stored_is_refused_before_writing(tmp_path):
    net = checkpoint_net()
    path = tmp_path / "m"
    with pytest.raises(TypeError, match="data array 'mean' must be a named vector"):
        checkpoint.save(net, path, data={"arrays": {"mean": np.zeros(99)}})
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        checkpoint.save(net, path, data={"meta": {"x": object()}})
    assert not path.exists()


def test_a_history_that_does_not_fit_the_network_is_refused_before_writing(tmp_path):
    from portable_bp.train import History

    X, Z = checkpoint_data()
    net = checkpoint_net()
    history = net.fit(X, Z, epochs=2)
    other = checkpoint_net()  # epochs_trained 0: the history's epochs 0, 1 are not its own
    with pytest.raises(ValueError, match="must increase from 0 and end before the network's epochs_trained"):
        checkpoint.save(other, tmp_path / "m", history=history)
    assert not (tmp_path / "m").exists()
    checkpoint.save(other, tmp_path / "m", history=History())  # an empty one is nothing to keep
    assert checkpoint.read_record(tmp_path / "m")["history"]["epochs"] == []


def test_fit_takes_a_checkpoint_that_carries_data_and_resumes_from_it(tmp_path):
    from portable_bp.train import Checkpoint

    X, Z = checkpoint_data()
    data = {"meta": {"classes": ["no", "yes"]}}
    checkpoint_net().fit(X, Z, epochs=2, checkpoint=Checkpoint(tmp_path / "ck", data=data))
    assert checkpoint.read_record(tmp_path / "ck")["data"] == {"meta": data["meta"], "arrays": {}}
    h = checkpoint_net().fit(X, Z, epochs=3, checkpoint=Checkpoint(tmp_path / "ck", data=data), resume=True)
    assert h.epochs == [0, 1, 2]
    assert checkpoint.read_record(tmp_path / "ck")["history"]["epochs"] == [0, 1, 2]
