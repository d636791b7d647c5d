"""ONNX export checked by onnxruntime: the exported graph computes what the network computes.

Tolerances: float32 rtol 1e-5, float64 rtol 1e-12, each with an absolute floor of the same
relative size of the output's largest magnitude. The floor is needed where an output sits
near zero (a cancellation in the last Gemm, or a sigmoid's far tail): onnxruntime's Sigmoid
and float32 Tanh are accurate to an ulp of 1, not to an ulp of the value (measured: float32
Sigmoid 1.8e-7 absolute, float64 2.2e-16), and its Gemm sums in another order than our BLAS.
"""

import json

import numpy as np
import pytest

import portable_bp as pb
from portable_bp import export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = {"float32": 1e-5, "float64": 1e-12}
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
# every output activation, with the loss heads that use them (the fused ones and mse)
HEADS = [("mse", "identity"), ("mse", "sigmoid"), ("mse", "tanh"), ("mse", "relu"), ("mse", "leaky_relu"),
         ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"), ("poisson", "exp")]


def session(model_or_path):
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def assert_same(theirs, ours, dtype):
    ours = np.asarray(ours)
    assert theirs.dtype == ours.dtype and theirs.shape == ours.shape
    rtol = RTOL[dtype]
    np.testing.assert_allclose(theirs, ours, rtol=rtol, atol=rtol * float(np.max(np.abs(ours))))


def network(sizes, activation, output, loss, dtype, seed=0):
    """A network with its own initial weights and small random biases (zero biases would
    leave every ReLU unit of a zero input exactly on its kink)."""
    net = pb.Network(sizes, activation=activation, output_activation=output, loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    net.set_params([(W, rng.normal(0.0, 0.1, b.shape)) for W, b in net.params])
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss, output", HEADS, ids=[f"{l}-{o}" for l, o in HEADS])
@pytest.mark.parametrize("activation", HIDDEN)
def test_onnxruntime_computes_what_the_network_computes(tmp_path, activation, loss, output, dtype):
    """Every hidden activation x output head x dtype, on 1 and 1,000 rows (one file: the
    batch dimension is dynamic); classifiers' label is the arg-max class's name."""
    net = network([5, 8, 7, 3], activation, output, loss, dtype)
    classes = ["cat", "dog", "emu"] if loss == "cross_entropy" else None
    net.export_onnx(tmp_path / "m.onnx", classes=classes)
    s = session(str(tmp_path / "m.onnx"))
    assert s.get_inputs()[0].shape == ["N", 5]
    rng = np.random.default_rng(1)
    for n in (1, 1000):
        X = rng.standard_normal((n, 5)).astype(dtype)
        got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"X": X})))
        ours = net.backend.to_numpy(net.forward(X))
        assert_same(got["outputs"], ours, dtype)
        if classes:
            assert got["label"].tolist() == np.asarray(classes)[np.argmax(ours, axis=1)].tolist()
        else:
            assert set(got) == {"outputs"}


@pytest.mark.parametrize("classes", [None, [10, 20, 30], [False, True, None]], ids=["indices", "integers", "bools"])
def test_label_speaks_the_class_names_of_any_kind(classes):
    dtype = "float64"
    if classes is not None and classes[-1] is None:
        net, classes = network([4, 6, 2], "tanh", "softmax", "cross_entropy", dtype), [False, True]
    else:
        net = network([4, 6, 3], "tanh", "softmax", "cross_entropy", dtype)
    model = export.network_model(net, classes=classes)
    X = np.random.default_rng(2).standard_normal((50, 4))
    label = session(model).run(["label"], {"X": X})[0]
    index = np.argmax(net.backend.to_numpy(net.forward(X)), axis=1)
    expected = index if classes is None else np.asarray(classes)[index]
    assert label.dtype == expected.dtype and label.tolist() == expected.tolist()
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props.get("classes") == (None if classes is None else list(classes))


def test_a_float32_network_exports_in_float64_too():
    net = network([4, 6, 3], "leaky_relu", "identity", "mse", "float32")
    X = np.random.default_rng(3).standard_normal((20, 4))
    out = session(export.network_model(net, dtype="float64")).run(["outputs"], {"X": X})[0]
    assert out.dtype == np.float64
    assert_same(out, net.to(dtype="float64").backend.to_numpy(net.to(dtype="float64").forward(X)), "float64")


def test_the_graph_uses_standard_operators_only():
    net = network([4, 6, 5, 3], "relu", "softmax", "cross_entropy", "float32")
    model = export.network_model(net, classes=["a", "b", "c"])
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Gemm") == 3 and ops.count("Relu") == 2 and "Softmax" in ops
    assert {o.domain for o in model.opset_import} == {""}
    onnx.checker.check_model(model, full_check=True)


def test_the_standardizer_goes_into_the_graph():
    """A standardizer (mean, scale) makes the graph take raw features."""
    net = network([3, 5, 2], "tanh", "identity", "mse", "float64")
    rng = np.random.default_rng(4)
    mean, scale = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    X = rng.normal(size=(30, 3)) * 3
    out = session(export.network_model(net, standardizer=(mean, scale))).run(["outputs"], {"X": X})[0]
    assert_same(out, net.backend.to_numpy(net.forward((X - mean) / scale)), "float64")


def test_an_output_activation_without_an_onnx_operator_is_refused_by_name(monkeypatch, tmp_path):
    """An activation added to the library's table without an ONNX operator: a ValueError
    naming it, and no file."""
    from portable_bp import activations

    cube = activations.Activation("cube", lambda xp, u: u * u * u, lambda xp, a, g: g, output_only=True)
    monkeypatch.setitem(activations.ACTIVATIONS, "cube", cube)
    net = pb.Network([2, 3, 1], activation="tanh", output_activation="cube", loss="mse")
    with pytest.raises(ValueError, match="output activation 'cube' has no ONNX operator"):
        net.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_network_trained_with_dropout_exports_its_inference_graph():
    """Dropout acts while training only: the graph is the plain forward pass, no Dropout node."""
    net = pb.Network([4, 8, 6, 3], activation="relu", loss="cross_entropy", dropout=0.5, dtype="float64", seed=0)
    X = np.random.default_rng(5).standard_normal((64, 4))
    net.fit(X, np.arange(64) % 3, epochs=2, lr=0.05)
    model = export.network_model(net)
    assert "Dropout" not in [node.op_type for node in model.graph.node]
    assert_same(session(model).run(["outputs"], {"X": X})[0], net.backend.to_numpy(net.forward(X)), "float64")


def test_without_onnx_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    net = network([2, 3, 1], "tanh", "identity", "mse", "float32")
    with pytest.raises(ImportError, match="pip install onnx"):
        net.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
