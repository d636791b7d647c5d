"""The ``predict`` and ``export`` commands: a saved model used on new data, or handed on as ONNX.

Both read what ``train --save`` stored with the network (:class:`.cli_data.Preprocessing`):
the class names, the feature names and the standardizer. ``predict`` matches a CSV's
columns to the model's features by name (the order may differ; the target column, if the
file has one, is ignored; a missing or unknown column is an error naming it), reads every
value as ``train`` does (a non-number or NaN is refused with its line and column), and
writes CSV in the user's labels (a multi-label model: one column per label). An output
path that is the model or the data is refused. A model saved from Python
(``Network.save``) has no such record: its features are used as given and its classes
are the output indices.

Host-side (NumPy is allowed here).
"""

from __future__ import annotations

import csv
import io
import sys

import numpy as np

from .datasets.labels import label_text

PREDICT_BATCH = 8192  # rows per forward pass: the activations alive are one batch's


def _by_name(path, names, prep, model) -> np.ndarray:
    """The features of a CSV with a header, in the model's order, matched by name."""
    from .datasets import load_table

    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}: column {name!r} appears more than once")
        seen.add(name)
    wanted = prep.feature_names
    target = prep.target if isinstance(prep.target, str) and prep.target in names else None
    missing = [f for f in wanted if f not in seen]
    if missing:
        raise ValueError(f"{path}: missing feature column {missing[0]!r}; {model} takes the columns "
                         f"{', '.join(wanted)}")
    extra = [c for c in names if c not in wanted and c != target]
    if extra:
        raise ValueError(f"{path}: column {extra[0]!r} is not one of {model}'s features "
                         f"({', '.join(wanted)}); remove it")
    table = load_table(path, target=target, header=True, empty_labels=True)  # the target is ignored
    assert table.feature_names is not None
    order = [table.feature_names.index(f) for f in wanted]
    return table.X[:, order]


def _by_position(path, width, has_header, prep, n_features, model) -> np.ndarray:
    """The features of a CSV taken by position: all its columns, or all but the model's
    target column (by index) when it has one more."""
    from .datasets import load_table

    target = None
    if width == n_features + 1 and prep is not None and isinstance(prep.target, int):
        target = prep.target
    elif width != n_features:
        raise ValueError(f"{path} has {width} columns but {model} takes {n_features} features"
                         + ("; give the file a header row to match columns by name"
                            if prep is not None and prep.feature_names else ""))
    return load_table(path, target=target, header=has_header, empty_labels=True).X


def features(path, prep, n_features: int, model) -> np.ndarray:
    """The samples of ``path`` as the model's raw features (before standardization)."""
    from .datasets import load_table
    from .datasets.files import table_header

    header = table_header(path, target=prep.target if prep is not None and isinstance(prep.target, int) else None)
    if header is None:  # NPZ (its X) or IDX images: by position
        X = load_table(path, target=None).X
        if X.shape[1] != n_features:
            raise ValueError(f"{path} has {X.shape[1]} features but {model} takes {n_features}")
        return X
    names, width = header
    if names is not None and prep is not None and prep.feature_names:
        return _by_name(path, names, prep, model)
    return _by_position(path, width, names is not None, prep, n_features, model)


def _outputs(net, X) -> np.ndarray:
    """The network's outputs for X, as host NumPy, batch by batch."""
    parts = [net.backend.to_numpy(net.forward(X[s:s + PREDICT_BATCH])) for s in range(0, len(X), PREDICT_BATCH)]
    return np.concatenate([np.asarray(p) for p in parts])


def _numbers(values: np.ndarray) -> list[str]:
    """Floats as text that reads back to the same value: 9 digits for float32, repr for float64."""
    if values.dtype == np.float32:
        return [f"{v:.9g}" for v in values.tolist()]
    return [repr(v) for v in values.tolist()]


def prediction_table(net, prep, A: np.ndarray, proba: bool) -> tuple[list[str], list[list[str]]]:
    """(header, columns): the predicted labels (and with ``proba`` each class's probability)
    for a classifier, the outputs for anything else."""
    name = prep.target if prep is not None and isinstance(prep.target, str) else "prediction"
    if prep is not None and prep.task == "multilabel":
        return _label_columns(prep.classes, A, proba)
    if net.is_classifier:
        classes = np.arange(A.shape[1]) if prep is None or prep.classes is None else prep.classes
        texts = np.asarray([label_text(c) for c in classes.tolist()])
        header, columns = [name], [texts[np.argmax(A, axis=1)].tolist()]
        if proba:
            header += [f"proba_{t}" for t in texts.tolist()]
            columns += [_numbers(A[:, k]) for k in range(A.shape[1])]
        return header, columns
    if A.shape[1] == 1:
        return [name], [_numbers(A[:, 0])]
    return [f"prediction_{k}" for k in range(A.shape[1])], [_numbers(A[:, k]) for k in range(A.shape[1])]


def _label_columns(values, A: np.ndarray, proba: bool) -> tuple[list[str], list[list[str]]]:
    """A multi-label model's predictions: one column per label (``label_0``, ...) holding the
    indicator value as the user wrote it (0/1 or False/True) where its output is above 0.5,
    as scikit-learn's ``predict`` decides; with ``proba`` each label's probability too."""
    texts = np.asarray([label_text(v) for v in values.tolist()])
    names = [f"label_{k}" for k in range(A.shape[1])]
    header, columns = list(names), [texts[(A[:, k] > 0.5).astype(np.int64)].tolist() for k in range(A.shape[1])]
    if proba:
        header += [f"proba_{name}" for name in names]
        columns += [_numbers(A[:, k]) for k in range(A.shape[1])]
    return header, columns


def _csv_text(header, columns) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns))
    return out.getvalue()


def cmd_predict(args, backend):
    """Predict with a saved model on ``--data``: CSV to ``--out`` or standard output."""
    from . import load
    from ._safe_io import atomic_write
    from .checkpoint import read_record
    from .cli_data import Preprocessing, check_not_an_input
    from .train.callbacks import check_output_path

    if args.out:
        check_output_path(args.out, "--out")
        check_not_an_input(args.out, "--out", [("model", args.model), ("--data file", args.data)])
    net = load(args.model, backend=backend)
    prep = Preprocessing.from_record(read_record(args.model), args.model, net)
    if args.proba and not (net.is_classifier or prep is not None and prep.task == "multilabel"):
        raise ValueError(f"--proba gives class probabilities, but {args.model} is not a classifier "
                         f"(loss {net.loss})")
    X = features(args.data, prep, net.sizes[0], args.model)
    if prep is not None:
        X = prep.standardizer().transform(X)
    header, columns = prediction_table(net, prep, _outputs(net, X), args.proba)
    text = _csv_text(header, columns)
    if not args.out:
        sys.stdout.write(text)
        return 0
    data = text.encode("utf-8")

    def write(f) -> None:
        f.write(data)

    atomic_write(args.out, write)
    print(f"wrote {len(X)} predictions of {args.data} to {args.out} (columns: {', '.join(header[:12])}"
          f"{', ...' if len(header) > 12 else ''})")
    return 0


def cmd_export(args, backend=None):
    """Write a saved model as ONNX, with its standardizer and class names."""
    from . import export, load
    from .checkpoint import read_record
    from .cli_data import Preprocessing, check_not_an_input
    from .train.callbacks import check_output_path

    check_output_path(args.onnx, "the ONNX file")
    check_not_an_input(args.onnx, "the ONNX file", [("model", args.model)])
    net = load(args.model)
    prep = Preprocessing.from_record(read_record(args.model), args.model, net)
    export.check_exportable(net.activation, net.output_activation)
    standardizer = None if prep is None else (prep.mean, prep.scale)
    classes = None if prep is None else prep.classes
    multilabel = prep is not None and prep.task == "multilabel"
    model = export.network_model(net, dtype=args.dtype, classes=classes if net.is_classifier or multilabel else None,
                                 standardizer=standardizer, feature_names=None if prep is None else prep.feature_names,
                                 multilabel=multilabel)
    export.save_model(model, args.onnx)
    label = f", label (N, {net.sizes[-1]})" if multilabel else ", label (N,)" if net.is_classifier else ""
    outputs = f"outputs (N, {net.sizes[-1]}){label}"
    print(f"wrote {args.onnx}: input X (N, {net.sizes[0]}) {args.dtype or net.dtype}"
          f"{' (raw features: standardized in the graph)' if prep is not None else ''}; outputs {outputs}")
    return 0
