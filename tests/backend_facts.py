"""What collecting the suite needs to know about each backend spec (whether it runs here and
why not, its capabilities, its Ops' overrides), learned once per run.

The fixtures' skip marks and the ``requires`` and ``cases`` markers ask every spec these
questions, and answering builds the backend: importing torch and JAX and checking their Ops
(~0.5 GB, JAX alone ~0.35 GB). Under pytest-xdist every worker collects every test, so
each used to hold every library from its first second, the worker that never runs a JAX
case included. So the run's own process (xdist's controller, which collects nothing) has
short-lived processes build them, one per library, and print the answers (``python
backend_facts.py [SPEC ...]``), and hands the answers to the workers: a worker imports a
library when it runs a test on it. The answers are the built backends' own, so the suite collects
the same cases as before. A run in one process learns in that process, as it will build
every backend anyway; so does a worker when the learning process failed, so a backend whose
factory raises is reported exactly as where the workers build it themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import portable_bp
from portable_bp import backends
from portable_bp.ops import InPlaceOps

# what ``@pytest.mark.requires(...)`` can ask of a backend that runs here
CAPABILITIES = {
    "mutable": lambda b: b.mutable,
    "compiles": lambda b: b.compile is not None,
    "overrides": lambda b: bool(b.ops.overrides()),
    "gpu": lambda b: b.is_gpu,
    "cpu": lambda b: not b.is_gpu,
}
# the key of the answers in xdist's workerinput
WORKERINPUT_KEY = "portable_bp_backend_facts"
# seconds the learning process may take (importing and checking every backend: ~5 s)
LEARN_TIMEOUT = 300


@dataclasses.dataclass(frozen=True)
class Facts:
    """One backend spec as collection sees it."""

    runs: bool
    reason: str = ""  # why it cannot run here: the probe's reason
    capabilities: tuple[str, ...] = ()  # the keys of CAPABILITIES it has
    overrides: tuple[str, ...] = ()  # the primitives its checked Ops computes its own way
    in_place: bool = False  # its Ops are InPlaceOps (the parameters' buffers are kept)
    hot_path: str = ""  # backends.hot_path of it


def learn(spec: str) -> Facts:
    """The facts of ``spec``, by building it (the registry's probe, then the backend)."""
    ok, reason = backends.probe(spec)
    if not ok:
        return Facts(runs=False, reason=reason)
    backend = backends.get(spec)
    return Facts(runs=True, capabilities=tuple(cap for cap, has in CAPABILITIES.items() if has(backend)),
                 overrides=tuple(backend.ops.overrides()), in_place=isinstance(backend.ops, InPlaceOps),
                 hot_path=backends.hot_path(backend))


_known: dict[str, Facts] = {}
_adopted: list[str] = []  # the specs whose facts came from the learning process


def facts(spec: str) -> Facts:
    """The facts of ``spec``: as handed over by :func:`adopt`, else learned here (once)."""
    if spec not in _known:
        _known[spec] = learn(spec)
    return _known[spec]


def adopt(text: str) -> None:
    """Take the answers of the learning process (its JSON) as this process's own."""
    for spec, fields in json.loads(text).items():
        _known[spec] = Facts(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        _adopted.append(spec)


def adopted() -> list[str]:
    """The specs whose facts this process took from the learning process."""
    return list(_adopted)


class Learning:
    """A learning process: this file run with the same interpreter and the portable_bp
    this process imported first on its path (a checkout other than the installed one is the
    one tested), started at once; its answers read once."""

    def __init__(self, argv: list[str] | None = None) -> None:
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(portable_bp.__file__)))
        path = [checkout] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        argv = argv or [sys.executable, os.path.abspath(__file__)]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True,
                                        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
        self._answers: str | None = None

    def answers(self, timeout: float = LEARN_TIMEOUT) -> str | None:
        """Its answers (JSON), or None where it failed or took more than ``timeout`` seconds
        (the workers then learn themselves, and meet the failure as it is)."""
        if self.process.returncode is None:
            try:
                out, _ = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                return None
            self._answers = out if self.process.returncode == 0 else None
        return self._answers

    def stop(self) -> None:
        """End it where no worker asked for its answers (the run ended before), and close its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.communicate()


def by_library(specs: list[str]) -> list[list[str]]:
    """The specs grouped by backend name (``torch`` and ``torch:cuda``), in their order."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        groups.setdefault(spec.partition(":")[0], []).append(spec)
    return list(groups.values())


def start_learning() -> list[Learning]:
    """A learning process per library, all started at once: JAX's import and Ops check (3 of
    the 5 s it takes to learn them all) then overlap the others' on the other core, while
    the workers wait for the answers."""
    return [Learning([sys.executable, os.path.abspath(__file__), *group])
            for group in by_library([spec for spec, _ in backends.specs()])]


def all_answers(learning: list[Learning]) -> str | None:
    """The answers of every learning process as one JSON object, in the registry's order of
    specs; None where one failed (the workers then learn everything themselves)."""
    merged: dict = {}
    for process in learning:
        text = process.answers()
        if text is None:
            return None
        merged.update(json.loads(text))
    return json.dumps(merged)


def main(argv: list[str]) -> None:
    """Print the facts of the specs named (every spec the registry knows, if none) as JSON."""
    specs = argv or [spec for spec, _ in backends.specs()]
    print(json.dumps({spec: dataclasses.asdict(learn(spec)) for spec in specs}))


if __name__ == "__main__":
    main(sys.argv[1:])
