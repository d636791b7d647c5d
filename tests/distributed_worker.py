"""The training runs of the data-parallel tests, run by every rank under ``mpiexec`` (and
by the tests themselves, in one process, for the reference):

    mpiexec -n 2 python -m distributed_worker SCENARIO OUT_DIR

``train``: every case of :data:`CASES`; each rank writes ``OUT_DIR/train.rank<r>.npz``
with every case's parameters, losses, epoch count and error message, so the test compares
the ranks with each other and with one process. ``die``, ``raise``, ``hang``: rank 1 is
SIGKILLed, raises, or stops answering during epoch 1; the test checks that the job ends,
within its timeout, with a clear error.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from portable_bp import Network
from portable_bp.train import EarlyStopping, TrainingDiverged


def data(n=103, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.integers(0, n_out, n), rng.uniform(0.0, 2.0, n)


def network(dtype="float64", backend="numpy", seed=1, activation="tanh"):
    return Network([5, 8, 3], activation=activation, loss="cross_entropy", dtype=dtype, seed=seed,
                   backend=backend)


# name -> (network kwargs, fit kwargs, data kwargs, with sample weights). Shuffled, and
# global batches that split unevenly (16 rows into 8 + 8, the last 7 into 4 + 3).
CASES = {
    "sgd": ({}, dict(optimizer="sgd", batch_size=16, epochs=3), {}, False),
    "momentum": ({}, dict(optimizer="momentum", batch_size=16, epochs=3), {}, False),
    "adam": ({}, dict(optimizer="adam", lr=0.01, batch_size=16, epochs=3), {}, False),
    "unshuffled": ({}, dict(optimizer="momentum", batch_size=10, epochs=2, shuffle=False), {}, False),
    "weights": ({}, dict(optimizer="adam", lr=0.01, batch_size=16, epochs=3), {}, True),
    # 21 rows in batches of 5: the last batch has 1 row, so rank 1's part of it is empty
    "empty_part": ({}, dict(optimizer="adam", lr=0.01, batch_size=5, epochs=3), dict(n=21), False),
    # single-sample SGD: every step has an empty part
    "batch_1": ({}, dict(optimizer="momentum", batch_size=1, epochs=2), dict(n=9), False),
    "full_batch": ({}, dict(optimizer="sgd", batch_size=None, epochs=4), {}, False),
    "det2": (dict(dtype="float32"), dict(optimizer="adam", lr=0.01, batch_size=16, epochs=3,
                                         deterministic=2), {}, True),
    "det4": (dict(dtype="float32"), dict(optimizer="momentum", batch_size=16, epochs=3,
                                         deterministic=4), {}, False),
    "det4_f64": ({}, dict(optimizer="adam", lr=0.01, batch_size=16, epochs=3, deterministic=4),
                 dict(n=21), False),
    "early_stop": ({}, dict(optimizer="momentum", batch_size=16, epochs=12), {}, False),
    # relu with a huge rate: the loss of batch 3 of epoch 2 is NaN (found by replaying)
    "diverge": (dict(activation="relu"), dict(optimizer="sgd", lr=1e10, batch_size=16, epochs=3), {}, False),
}
JAX_CASES = {"jax": (dict(backend="jax"), dict(optimizer="adam", lr=0.01, batch_size=16, epochs=2), {}, True)}


def _callbacks(name, comm_rank):
    """early_stop: EarlyStopping on every rank, and a callback whose answer differs by
    rank: rank 0 stops after epoch 5, rank 1 would stop after epoch 0 (it is not asked)."""
    if name != "early_stop":
        return []
    return [EarlyStopping("val_loss", patience=2),
            lambda net, epoch, logs: (comm_rank == 0 and epoch == 5) or (comm_rank == 1 and epoch == 0)]


def run_case(name, comm=None, cases=None, **extra):
    """One case trained (with ``comm``, or alone): {parameter arrays, losses, epochs, error}."""
    net_kw, fit_kw, data_kw, weighted = {**CASES, **JAX_CASES, **(cases or {})}[name]
    X, y, w = data(**data_kw)
    net = network(**net_kw)
    rank = 0 if comm is None else comm.rank
    fit_kw = {**fit_kw, **extra}
    validation = (X[:40], y[:40]) if name == "early_stop" else None
    error, losses = "", []
    try:
        with np.errstate(all="ignore"):  # the diverging case overflows on purpose
            h = net.fit(X, y, sample_weight=w if weighted else None, comm=comm, validation_data=validation,
                        callbacks=_callbacks(name, rank), **fit_kw)
        losses = h.history["loss"]
    except TrainingDiverged as exc:
        error = str(exc)
    params = [np.array(net.backend.to_numpy(a)) for pair in net.params for a in pair]
    return {"params": params, "loss": np.array(losses), "epochs": net.epochs_trained, "error": error}


def save_results(path, results: dict):
    arrays = {}
    for name, r in results.items():
        for i, p in enumerate(r["params"]):
            arrays[f"{name}/p{i}"] = p
        arrays[f"{name}/loss"] = r["loss"]
        arrays[f"{name}/epochs"] = np.array(r["epochs"])
        arrays[f"{name}/error"] = np.array(r["error"])
    np.savez(path, **arrays)


def load_results(path) -> dict:
    out = {}
    with np.load(path) as npz:
        for key in npz.files:
            name, field = key.split("/")
            out.setdefault(name, {"params": []})
            if field.startswith("p"):
                out[name]["params"].append((int(field[1:]), npz[key]))
            else:
                out[name][field] = npz[key][()] if npz[key].ndim == 0 else npz[key]
    for r in out.values():
        r["params"] = [p for _, p in sorted(r["params"], key=lambda t: t[0])]
    return out


def train(comm, out, with_jax):
    names = list(CASES) + (list(JAX_CASES) if with_jax else [])
    results = {name: run_case(name, comm) for name in names}
    # checkpoints across world sizes: this world writes one, and resumes one written alone
    written = os.path.join(out, f"ckpt_{comm.size}.npz")
    results["ckpt_write"] = run_case("adam", comm, epochs=2, checkpoint=written)
    alone = os.path.join(out, "ckpt_alone.npz")
    if os.path.exists(alone):
        results["ckpt_resume"] = run_case("adam", comm, epochs=4, checkpoint=alone, resume=True)
    save_results(os.path.join(out, f"train.rank{comm.rank}.npz"), results)


def failing(comm, how):
    """Rank 1 fails during epoch 1 (``how``: die, raise, hang); rank 0 trains on."""
    def fail(net, epoch, logs):
        if comm.rank == 1 and epoch == 1:
            if how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "raise":
                raise ValueError("rank 1 fails on purpose")
            time.sleep(600)
    X, y, _ = data()
    network().fit(X, y, epochs=50, batch_size=16, callbacks=[fail], comm=comm)
    print(f"rank {comm.rank}: training finished", flush=True)


def main(argv):
    from portable_bp.distributed import MPI

    scenario, out = argv[0], argv[1]
    comm = MPI()
    if scenario == "train":
        train(comm, out, with_jax="--jax" in argv)
    else:
        failing(comm, scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
