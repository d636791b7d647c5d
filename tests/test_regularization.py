"""Dropout, L2 and clipping: gradients against PyTorch autograd and finite differences on
the same masks, clipping against ``torch.nn.utils``, and the bad input each refuses."""

import re

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.gradcheck import gradcheck
from portable_bp.transforms import L2, ClipNorm, regularization

torch = pytest.importorskip("torch")


def pattern(words):
    """``words`` as a regular expression: literal, but ``.*`` matches anything."""
    return ".*".join(re.escape(part) for part in words.split(".*"))


def data(n=12, n_in=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.integers(0, classes, n)


def net_with_dropout(dropout=(0.3, 0.5), activation="tanh", **kw):
    return pbp.Network([4, 6, 5, 3], activation=activation, loss="cross_entropy", dtype="float64", seed=3,
                       dropout=list(dropout), **kw)


def masks_of(net, X, count):
    """The (S1, S2) masks the step draws at step ``count`` for the batch X (the Ops primitive)."""
    ops, xp = net.ops, net.xp
    shapes = net.sizes[1:-1]
    return [np.asarray(ops.dropout_mask(net.seed, count, l, 0, xp.zeros((X.shape[0], n), dtype=xp.float64), rate))
            for l, (n, rate) in enumerate(zip(shapes, net.dropout))]


def torch_loss(net, X, y, masks, l2=0.0):
    """The same network in PyTorch with the given dropout masks and L2 term: (loss, params)."""
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}
    params = [(torch.tensor(np.asarray(W), requires_grad=True), torch.tensor(np.asarray(b), requires_grad=True))
              for W, b in net.params]
    a = torch.tensor(X)
    for l, (W, b) in enumerate(params[:-1]):
        a = acts[net.activation](a @ W.T + b)
        a = a * torch.tensor(masks[l]) if masks else a
    logits = a @ params[-1][0].T + params[-1][1]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    loss = loss + 0.5 * l2 * sum((W * W).sum() for W, _ in params) / X.shape[0]
    return loss, params


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_gradients_with_dropout_and_l2_equal_pytorch_autograd_on_the_same_masks(activation):
    X, y = data()
    net = net_with_dropout(activation=activation)
    masks = masks_of(net, X, count=11)
    assert all(((m == 0) | np.isclose(m, 1 / (1 - r))).all() for m, r in zip(masks, net.dropout))
    assert all(0 < (m == 0).mean() < 1 for m in masks)  # some dropped, some kept
    want_loss, params = torch_loss(net, X, y, masks, l2=0.3)
    want_loss.backward()
    loss, grads = net.loss_and_grads(X, y, l2=0.3, training_step=11)
    assert loss == pytest.approx(want_loss.item(), rel=1e-12)
    for (dW, db), (W, b) in zip(grads, params):
        np.testing.assert_allclose(np.asarray(dW), W.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np.asarray(db), b.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_gradients_with_dropout_and_l2_pass_finite_differences():
    X, y = data()
    net = net_with_dropout()
    assert gradcheck(net, X, y, l2=0.5, training_step=4) < 1e-7
    # evaluation mode: no masks, the same weights give another loss
    assert net.loss_and_grads(X, y)[0] != net.loss_and_grads(X, y, training_step=4)[0]


def test_dropout_is_off_in_forward_predict_and_evaluate():
    X, y = data()
    plain = pbp.Network([4, 6, 5, 3], activation="tanh", loss="cross_entropy", dtype="float64", seed=3)
    dropped = net_with_dropout()
    np.testing.assert_array_equal(np.asarray(plain.forward(X)), np.asarray(dropped.forward(X)))
    np.testing.assert_array_equal(plain.predict(X), dropped.predict(X))
    assert plain.evaluate(X, y) == dropped.evaluate(X, y)


def test_masks_differ_by_step_and_layer_and_keep_the_rate():
    net = pbp.Network([10, 1000, 1000, 2], dropout=0.25, seed=5, dtype="float64")
    X = np.zeros((200, 10))
    a, b = masks_of(net, X, 0)
    c, _ = masks_of(net, X, 1)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    for m in (a, b, c):
        assert abs((m == 0).mean() - 0.25) < 0.005  # 200,000 draws: 5 sigma is 0.0049
        assert set(np.unique(m)) == {0.0, 1 / 0.75}


@pytest.mark.parametrize("max_norm", [0.05, 1e6])
def test_clip_norm_equals_torch_clip_grad_norm(max_norm):
    X, y = data()
    net = pbp.Network([4, 6, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=1)
    loss, params = torch_loss(net, X, y, masks=[])
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for pair in params for p in pair], max_norm)
    _, grads = net.loss_and_grads(X, y)
    from portable_bp.ops import DenseGrad

    clipped = ClipNorm(max_norm).every_layer(net.ops, [(l, DenseGrad.of_arrays(*g)) for l, g in enumerate(grads)],
                                             net.params, None)
    for (_, g), (W, b) in zip(clipped, params):
        np.testing.assert_allclose(np.asarray(g.arrays[0]), W.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(g.arrays[1]), b.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("clip", [dict(clip_norm=0.1), dict(clip_value=0.01), dict(l2=0.2),
                                  dict(l2=0.2, clip_value=0.05, clip_norm=0.1)])
def test_a_clipped_or_regularized_fit_equals_pytorch_step_for_step(clip):
    """SGD with momentum for 3 epochs of 4 batches of 3 (12 steps), unshuffled:
    the same parameters as PyTorch's loss + L2, backward, clip_grad_value_, clip_grad_norm_, step."""
    X, y = data()
    net = pbp.Network([4, 6, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=1)
    loss, params = torch_loss(net, X, y, masks=[])
    flat = [p for pair in params for p in pair]
    opt = torch.optim.SGD(flat, lr=0.1, momentum=0.9)
    for _ in range(3):
        for s in range(0, 12, 3):
            opt.zero_grad()
            a = torch.relu(torch.tensor(X[s:s + 3]) @ params[0][0].T + params[0][1])
            batch_loss = torch.nn.functional.cross_entropy(a @ params[1][0].T + params[1][1], torch.tensor(y[s:s + 3]))
            batch_loss = batch_loss + 0.5 * clip.get("l2", 0.0) * (params[0][0] ** 2).sum() / 3 \
                + 0.5 * clip.get("l2", 0.0) * (params[1][0] ** 2).sum() / 3
            batch_loss.backward()
            if "clip_value" in clip:
                torch.nn.utils.clip_grad_value_(flat, clip["clip_value"])
            if "clip_norm" in clip:
                torch.nn.utils.clip_grad_norm_(flat, clip["clip_norm"])
            opt.step()
    net.fit(X, y, epochs=3, batch_size=3, shuffle=False, optimizer=pbp.optim.SGD(0.1, momentum=0.9), **clip)
    for (W, b), (tW, tb) in zip(net.params, params):
        np.testing.assert_allclose(np.asarray(W), tW.detach().numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.asarray(b), tb.detach().numpy(), rtol=1e-10, atol=1e-13)


def test_the_l2_term_is_in_the_reported_loss():
    X, y = data()
    net = pbp.Network([4, 6, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=1)
    before = net.params
    plain = net.loss_and_grads(X, y)[0]
    sq = sum(float(np.sum(np.asarray(W) ** 2)) for W, _ in before)
    assert net.loss_and_grads(X, y, l2=0.7)[0] == pytest.approx(plain + 0.5 * 0.7 * sq / 12, rel=1e-12)
    history = net.fit(X, y, epochs=1, batch_size=12, l2=0.7, lr=1e-12)  # one full batch, barely moving
    assert history.history["loss"][0] == pytest.approx(plain + 0.5 * 0.7 * sq / 12, rel=1e-9)


def test_regularization_builds_the_chain_in_the_gradients_order():
    chain = regularization(l2=0.1, clip_value=1.0, clip_norm=2.0)
    assert [t.name for t in chain.transforms] == ["l2", "clip_value", "clip_norm"]
    assert chain.needs_every_layer and not regularization(l2=0.1).needs_every_layer
    assert not regularization() and not regularization(l2=0.0)
    assert isinstance(regularization(l2=0.1).transforms[0], L2)


@pytest.mark.parametrize("kwargs,words", [
    (dict(dropout=1.0), "dropout must be a number >= 0 and < 1 (finite), got 1.0"),
    (dict(dropout=-0.1), "dropout must be a number >= 0 and < 1 (finite), got -0.1"),
    (dict(dropout=float("nan")), "dropout must be .* got nan"),
    (dict(dropout=[0.1, 0.2, 0.3]), "one per hidden layer (2); got 3 rates [0.1, 0.2, 0.3] (the output"),
    (dict(dropout=[0.1]), "one per hidden layer (2); got 1"),
    (dict(dropout="0.5"), "dropout must be"),
])
def test_bad_dropout_is_refused_naming_it(kwargs, words):
    with pytest.raises(ValueError, match=pattern(words)):
        pbp.Network([4, 6, 5, 3], **kwargs)


def test_dropout_without_a_hidden_layer_is_refused():
    with pytest.raises(ValueError, match="dropout=0.5 needs a hidden layer"):
        pbp.Network([4, 3], dropout=0.5)
    pbp.Network([4, 3], dropout=0.0)


@pytest.mark.parametrize("kwargs,words", [
    (dict(l2=-0.1), "l2 must be a number >= 0 (finite), got -0.1"),
    (dict(l2=float("inf")), "l2 must be .* got inf"),
    (dict(clip_norm=-1.0), "clip_norm must be a positive number (finite), got -1.0"),
    (dict(clip_norm=0.0), "clip_norm must be a positive number"),
    (dict(clip_norm=float("nan")), "clip_norm must be .* got nan"),
    (dict(clip_value=float("nan")), "clip_value must be .* got nan"),
    (dict(clip_value=-2), "clip_value must be a positive number (finite), got -2"),
])
def test_bad_regularization_is_refused_before_the_first_step(kwargs, words):
    X, y = data()
    net = net_with_dropout()
    before = [np.array(np.asarray(W)) for W, _ in net.params]
    with pytest.raises(ValueError, match=pattern(words)):
        net.fit(X, y, epochs=1, **kwargs)
    assert all(np.array_equal(a, np.asarray(W)) for a, (W, _) in zip(before, net.params))
    assert net.epochs_trained == 0 and net.optimizer_state is None


# max_iter is cut short on purpose: its ConvergenceWarning, left to reach the xdist controller, would
# make that process import scikit-learn to rebuild the warning (~0.1 GB held to the end of the run)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_sklearn_lbfgs_with_alpha_on_other_backends_equals_scikit_learn(backend):
    """L-BFGS's objective adds the library's L2 on the host: device gradients are read back
    once, host ones used as they are (on any backend)."""
    from sklearn.neural_network import MLPClassifier as Theirs

    from portable_bp.sklearn import MLPClassifier

    X, y = data(n=40)
    kw = dict(hidden_layer_sizes=(5,), solver="lbfgs", alpha=0.3, max_iter=30, random_state=0)
    ours = MLPClassifier(backend=backend, dtype="float64", **kw).fit(X, y)
    theirs = Theirs(**kw).fit(X, y)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-7)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
