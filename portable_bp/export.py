"""ONNX export: a trained network as a standard ONNX graph that any ONNX runtime can run.

Each layer is one ``Gemm`` (``X Wᵀ + b``: W is stored as the network holds it, (n_out,
n_in), with ``transB=1``) followed by its activation's own operator (``Sigmoid``, ``Tanh``,
``Relu``, ``LeakyRelu``, ``Identity``, ``Softmax`` over the last axis, ``Exp``); the batch
dimension is dynamic (``N``), and the graph is float32 or float64 throughout. Only standard
operators of the default domain are used (opset :data:`OPSET`, IR version :data:`IR_VERSION`),
so onnxruntime, TensorRT or OpenVINO can run it.

One exception to one-operator-per-activation: ``LeakyRelu``'s slope is an attribute, which
ONNX stores as a float32, so a float64 graph would use 0.01 rounded to float32; there leaky
ReLU is ``Max(u, 0.01·u)`` with a float64 constant, which is how the library computes it.

Outputs: ``outputs``, the network's last activations (N, n_out); for a cross-entropy
network also ``label``, the class of the largest output: the class names when given (text,
integers or booleans), else the class index. With a standardizer (the command line stores
one with the model) the graph takes the raw features and standardizes them first.
The estimators of :mod:`portable_bp.sklearn` export what their ``predict`` and
``predict_proba`` return: ``label`` and ``probabilities`` (classifiers), ``predictions``
(regressors).

Host-side module: it needs NumPy and the ``onnx`` package (``pip install onnx``; the ``export`` extra).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8  # what opset 17 came with: runtimes back to onnxruntime 1.13 load it
ONNX_OPERATORS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "leaky_relu": "LeakyRelu",
                  "identity": "Identity", "softmax": "Softmax", "exp": "Exp"}
"""The ONNX operator of each activation; an activation missing here cannot be exported."""
DTYPES = ("float32", "float64")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install onnx (from a checkout of '
                          'portable_bp: pip install ".[export]")') from None
    return onnx


def check_exportable(activation: str, output_activation: str) -> None:
    """A ValueError naming the activation that has no ONNX operator, if one has none."""
    for what, name in (("output activation", output_activation), ("activation", activation)):
        if name not in ONNX_OPERATORS:
            raise ValueError(f"cannot export to ONNX: the {what} {name!r} has no ONNX operator "
                             f"(exportable: {', '.join(ONNX_OPERATORS)})")


class _Graph:
    """Nodes and constants of the graph being built, with fresh names."""

    def __init__(self, dtype: str):
        self.onnx = _onnx()
        self.dtype = np.dtype(dtype)
        self.elem = self.onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes: list = []
        self.constants: list = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, stem: str, value) -> str:
        name = self.name(stem)
        array = np.asarray(value)
        if array.dtype.kind in "US":
            array = array.astype(object)
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, output: str | None = None, **attrs) -> str:
        out = output or self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def activation(self, name: str, u: str, output: str | None = None) -> str:
        """``name`` applied to ``u`` by its ONNX operator (see the module docstring for
        leaky ReLU in float64)."""
        if name == "leaky_relu" and self.dtype == np.float64:
            from .activations import LEAKY_SLOPE

            scaled = self.op("Mul", [u, self.constant("slope", np.asarray(LEAKY_SLOPE, self.dtype))], "scaled")
            return self.op("Max", [u, scaled], "leaky_relu", output)
        if name == "leaky_relu":
            from .activations import LEAKY_SLOPE

            return self.op("LeakyRelu", [u], "leaky_relu", output, alpha=LEAKY_SLOPE)
        if name == "softmax":
            return self.op("Softmax", [u], "softmax", output, axis=-1)
        return self.op(ONNX_OPERATORS[name], [u], name, output)


def _layers(g: _Graph, params, activations, standardizer, outputs_name: str | None) -> str:
    """Standardization (if any), then Gemm and activation per layer; the last activation's name."""
    a = "X"
    if standardizer is not None:
        mean, scale = (np.asarray(v, dtype=g.dtype) for v in standardizer)
        a = g.op("Div", [g.op("Sub", [a, g.constant("mean", mean)], "centred"), g.constant("scale", scale)],
                 "standardized")
    last = len(params) - 1
    for l, ((W, b), act) in enumerate(zip(params, activations)):
        u = g.op("Gemm", [a, g.constant(f"W{l}", np.asarray(W, g.dtype)), g.constant(f"b{l}", np.asarray(b, g.dtype))],
                 f"u{l}", transB=1)
        a = g.activation(act, u, outputs_name if l == last else None)
    return a


def _label_of(g: _Graph, index: str, classes) -> str:
    """``classes[index]`` (a Gather from the class names), or the int64 index itself."""
    if classes is None:
        return g.op("Identity", [index], "label", "label")
    return g.op("Gather", [g.constant("classes", np.asarray(classes)), index], "label", "label", axis=0)


def _value_info(g: _Graph, name: str, elem, shape) -> Any:
    return g.onnx.helper.make_tensor_value_info(name, elem, shape)


def _label_elem(g: _Graph, classes):
    if classes is None:
        return g.onnx.TensorProto.INT64
    array = np.asarray(classes)
    if array.dtype.kind in "US":
        return g.onnx.TensorProto.STRING
    return g.onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


def _model(g: _Graph, n_in: int, outputs: list, metadata: dict, doc: str):
    helper = g.onnx.helper
    graph = helper.make_graph(g.nodes, "portable_bp", [_value_info(g, "X", g.elem, ["N", n_in])], outputs,
                              initializer=g.constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="portable_bp", doc_string=doc)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items() if v is not None})
    g.onnx.checker.check_model(model, full_check=True)
    return model


def _checked(sizes, activation, output_activation, params, dtype, classes, standardizer):
    check_exportable(activation, output_activation)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if classes is not None and len(classes) != sizes[-1]:
        raise ValueError(f"{len(classes)} class names for a network with {sizes[-1]} outputs")
    if standardizer is not None and any(np.shape(v) != (sizes[0],) for v in standardizer):
        raise ValueError(f"the standardizer must hold {sizes[0]} means and {sizes[0]} scales")
    return [(np.asarray(W), np.asarray(b)) for W, b in params]


def network_model(net, *, dtype=None, classes=None, standardizer=None, feature_names=None, multilabel=False):
    """The ONNX model (an ``onnx.ModelProto``) of ``net``: input ``X`` (N, n_in), output
    ``outputs`` (N, n_out) and, for a cross-entropy network, ``label`` (N,): ``classes``
    indexed by the arg-max (class indices without ``classes``). ``multilabel`` (a sigmoid
    network, one output per label): ``label`` (N, n_out) is ``classes[output > 0.5]``, the
    two indicator values (default 0 and 1). ``standardizer``: (mean, scale) applied to
    ``X`` first. ``dtype``: float32 or float64 (default: the network's). ``feature_names``
    and ``classes`` are also recorded in the model's metadata."""
    dtype = net.dtype if dtype is None else dtype
    if multilabel and net.output_activation != "sigmoid":
        raise ValueError(f"a multi-label export needs sigmoid outputs, not {net.output_activation!r}")
    if multilabel and classes is not None and len(classes) != 2:
        raise ValueError(f"a multi-label model's classes are its 2 indicator values, got {len(classes)}")
    params = _checked(net.sizes, net.activation, net.output_activation,
                      [(net.backend.to_numpy(W), net.backend.to_numpy(b)) for W, b in net.params],
                      dtype, classes if net.is_classifier else None, standardizer)
    g = _Graph(dtype)
    activations = [net.activation] * (len(params) - 1) + [net.output_activation]
    _layers(g, params, activations, standardizer, "outputs")
    outputs = [_value_info(g, "outputs", g.elem, ["N", net.sizes[-1]])]
    if net.is_classifier:
        _label_of(g, g.op("ArgMax", ["outputs"], "index", axis=1, keepdims=0), classes)
        outputs.append(_value_info(g, "label", _label_elem(g, classes), ["N"]))
    elif multilabel:
        above = g.op("Greater", ["outputs", g.constant("half", np.asarray(0.5, g.dtype))], "above")
        _label_of(g, g.op("Cast", [above], "index", to=g.onnx.TensorProto.INT64),
                  np.asarray([0, 1]) if classes is None else classes)
        outputs.append(_value_info(g, "label", _label_elem(g, np.asarray([0, 1]) if classes is None else classes),
                                   ["N", net.sizes[-1]]))
    metadata = {"feature_names": feature_names, "classes": None if classes is None else np.asarray(classes).tolist()}
    return _model(g, net.sizes[0], outputs, metadata, f"portable_bp network {'-'.join(map(str, net.sizes))} "
                  f"{net.activation}/{net.output_activation}, loss {net.loss}")


def estimator_model(net, *, classes=None, dtype=None, feature_names=None):
    """The ONNX model of a fitted scikit-learn-style estimator's network: ``label`` and
    ``probabilities`` as ``predict`` and ``predict_proba`` give them for a classifier
    (``classes`` given: softmax for several classes, one logistic unit for two, one per
    label for multilabel targets), ``predictions`` (N, n_outputs) for a regressor."""
    dtype = net.dtype if dtype is None else dtype
    params = _checked(net.sizes, net.activation, net.output_activation,
                      [(net.backend.to_numpy(W), net.backend.to_numpy(b)) for W, b in net.params], dtype, None, None)
    g = _Graph(dtype)
    activations = [net.activation] * (len(params) - 1) + [net.output_activation]
    n_out = net.sizes[-1]
    if classes is None:
        _layers(g, params, activations, None, "predictions")
        outputs = [_value_info(g, "predictions", g.elem, ["N", n_out])]
    else:
        p = _layers(g, params, activations, None, None)
        outputs = _classifier_outputs(g, p, np.asarray(classes), n_out, net.output_activation)
    metadata = {"feature_names": feature_names, "classes": None if classes is None else np.asarray(classes).tolist()}
    return _model(g, net.sizes[0], outputs, metadata, "portable_bp.sklearn estimator")


def _classifier_outputs(g: _Graph, p: str, classes: np.ndarray, n_out: int, output_activation: str) -> list:
    """``label`` and ``probabilities`` from the output activations ``p``."""
    int64 = g.onnx.TensorProto.INT64
    if output_activation == "softmax":
        g.op("Identity", [p], "probabilities", "probabilities")
        _label_of(g, g.op("ArgMax", [p], "index", axis=1, keepdims=0), classes)
        return [_value_info(g, "label", _label_elem(g, classes), ["N"]),
                _value_info(g, "probabilities", g.elem, ["N", n_out])]
    above = g.op("Cast", [g.op("Greater", [p, g.constant("half", np.asarray(0.5, g.dtype))], "above")],
                 "above_int", to=int64)
    if n_out == 1:  # binary: predict_proba gives [1 - p, p]; the label is classes[p > 0.5]
        one = g.constant("one", np.asarray(1.0, g.dtype))
        g.op("Concat", [g.op("Sub", [one, p], "complement"), p], "probabilities", "probabilities", axis=1)
        flat = g.op("Reshape", [above, g.constant("flat", np.asarray([-1], np.int64))], "index")
        _label_of(g, flat, classes)
        return [_value_info(g, "label", _label_elem(g, classes), ["N"]),
                _value_info(g, "probabilities", g.elem, ["N", 2])]
    g.op("Identity", [p], "probabilities", "probabilities")  # multilabel: an indicator per label
    g.op("Identity", [above], "label", "label")
    return [_value_info(g, "label", int64, ["N", n_out]), _value_info(g, "probabilities", g.elem, ["N", n_out])]


def save_model(model, path) -> None:
    """Write an ONNX model to ``path`` atomically (the path is used exactly as given)."""
    from ._safe_io import atomic_write

    data = model.SerializeToString()

    def write(f) -> None:
        f.write(data)

    atomic_write(os.fsdecode(os.fspath(path)), write)
