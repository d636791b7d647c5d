"""The ``portable-bp`` command: train, evaluate, predict, export, backends, gradcheck, explain, bench.

Every subcommand is a small function over parsed arguments (:mod:`.cli_parser` builds
them; ``train`` and ``evaluate`` live in :mod:`.cli_train`, ``predict`` and ``export`` in
:mod:`.cli_predict`). Problems the user can fix (a
bad flag or value, a missing file, a backend that cannot run here) end the command with
exit status 2 and one line on stderr, ``portable-bp: error: ...``, never a traceback; set
``PORTABLE_BP_DEBUG=1`` to see the traceback instead; running out of memory is such a
problem too (one line naming the array and the bytes asked for). Ctrl-C exits with 130
and SIGTERM with 143, after ``train`` has written what it has; a divergence exits with 1;
output to a pipe whose reader has gone (``| head``) ends the command quietly with 141.
The statuses and the signal handling live in :mod:`.stopping`.

Host-side module (NumPy is allowed here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from . import stopping
from .cli_parser import BENCH_HELP, GRADCHECK_THRESHOLD, build_parser
from .cli_predict import cmd_export, cmd_predict
from .cli_train import PROG, cmd_evaluate, cmd_train
from .explain import EXPLAIN_TOLERANCE, explain_seed_network

Terminated = stopping.Terminated  # SIGTERM, honoured as Ctrl-C is (the name the command had)


def cmd_backends(args, backend=None):
    """A table of every known backend: does it run here, on which device, and if not, why."""
    from .backends import describe, get

    rows = [("backend", "runs here", "device", "version", "hot path", "reason it cannot run")]
    described = describe()
    for r in described:
        rows.append((r["spec"], "yes" if r["available"] else "no",
                     r.get("device_name") or r["device"] or "-", r["version"] or "-",
                     r.get("hot_path") or "-", " ".join(r["reason"].split()) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
    for r in described:
        if r["available"]:
            overrides = get(r["spec"]).ops.overrides()
            print(f"{r['spec']} overrides: {', '.join(overrides) or 'none (the Array API reference)'}")
        for name, why in r["dropped"].items():
            print(f"{r['spec']}: its {name} override failed its check and is not used: {' '.join(why.split())}")
    print(f"auto selects: {get('auto').spec}")
    return 0


def cmd_gradcheck(args, backend):
    """Backpropagation against central differences on a small random network (float64)."""
    import numpy as np

    from .gradcheck import gradcheck
    from .network import Network

    net = Network([args.inputs, *args.hidden, args.outputs], activation=args.activation,
                  output_activation=args.output_activation, loss=args.loss, backend=backend,
                  dtype="float64", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    # Non-zero biases: with zero biases a ReLU unit whose inputs are all zero sits exactly
    # on its kink, where finite differences and the subgradient rightly disagree.
    net.set_params([(backend.to_numpy(W), rng.normal(0.0, 0.1, size=n))
                    for (W, _), n in zip(net.params, net.sizes[1:])])
    X = rng.standard_normal((args.samples, args.inputs))
    if args.loss == "cross_entropy":
        Z = rng.integers(0, args.outputs, size=args.samples)
    elif args.loss == "binary_cross_entropy":
        Z = rng.uniform(0.0, 1.0, size=(args.samples, args.outputs))
    else:
        Z = rng.standard_normal((args.samples, args.outputs))
    error = gradcheck(net, X, Z)
    ok = error < GRADCHECK_THRESHOLD
    print(f"network {'-'.join(map(str, net.sizes))} {net.activation}/{net.output_activation}, "
          f"loss {net.loss}, float64 on {backend.spec}, {args.samples} samples (seed {args.seed})")
    print(f"max relative error: {error:.3e} (threshold {GRADCHECK_THRESHOLD:g}): "
          f"{'PASS' if ok else 'FAIL'}")
    return stopping.EXIT_OK if ok else stopping.EXIT_FAILED


def cmd_explain(args, backend):
    """Walk through the derivation's 3-4-2 example and check the library against E3/E5."""
    worst = explain_seed_network(backend, args.seed)
    return stopping.EXIT_OK if worst <= EXPLAIN_TOLERANCE else stopping.EXIT_FAILED


def cmd_bench(rest):
    """``python -m benchmarks ARGS`` from the current folder, if it is a source checkout."""
    if not os.path.isfile(os.path.join(os.getcwd(), "benchmarks", "__main__.py")):
        if any(a in ("-h", "--help") for a in rest):
            print(f"usage: {PROG} bench [ARGS ...]\n\n{BENCH_HELP}")
            return 0
        sys.stderr.write(f"{PROG}: error: bench runs from a source checkout of portable_bp: cd to "
                         f"the repository root (the folder holding benchmarks/) and run it again\n")
        return stopping.EXIT_USAGE
    return subprocess.call([sys.executable, "-m", "benchmarks", *rest], cwd=os.getcwd())


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "backends": cmd_backends,
            "gradcheck": cmd_gradcheck, "explain": cmd_explain}


def _one_line(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _run(args):
    """The command, with SIGINT and SIGTERM handled by :mod:`.stopping` meanwhile; NumPy's
    overflow warnings of a diverging run are left to TrainingDiverged to report, once."""
    from .backends import get

    backend = get(args.backend) if hasattr(args, "backend") else None
    with stopping.handled(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered",
                                RuntimeWarning)
        return COMMANDS[args.command](args, backend)


def _reader_gone() -> int:
    """Standard output's reader went away (``portable-bp predict ... | head``): stop quietly,
    as Unix tools do, with the status a shell reports for SIGPIPE (141). Standard output is
    pointed at the null device first, so that Python's flush at exit raises nothing more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a captured stream)
        pass
    return 128 + 13  # SIGPIPE's number on every POSIX system


def main(argv=None) -> int:
    """Entry point of ``portable-bp`` and ``python -m portable_bp``; returns the exit status."""
    from .backends import BackendUnavailable
    from .train import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, stopping.Terminated)
        why = f" ({exc})" if str(exc) else ""  # with many processes: which were signalled
        sys.stderr.write(f"{PROG}: {'terminated' if terminated else 'interrupted'}{why}\n")
        return stopping.exit_status(exc)
    except BrokenPipeError:
        return _reader_gone()
    except (TrainingDiverged, ValueError, TypeError, OSError, ImportError, MemoryError,
            BackendUnavailable) as exc:
        if os.environ.get("PORTABLE_BP_DEBUG"):
            raise
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return stopping.exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
