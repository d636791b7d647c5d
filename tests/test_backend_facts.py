"""What collection knows of the backends (``backend_facts``) is what the built backends say,
it reaches the xdist workers from the one process that learned it, and a backend that
cannot run or whose factory raises is reported as the registry reports it."""

import json
import os
import sys

import backend_facts
import pytest
from backend_facts import CAPABILITIES, Facts, Learning, all_answers, by_library, facts, learn
from conftest import _ruled_out

from portable_bp.backends import Backend, BackendUnavailable, specs


@pytest.mark.every_backend
def test_collection_used_what_every_built_backend_says():
    """Every spec's facts, as this process's collection used them, equal those of the
    backend built here; on an xdist worker they came from the learning process (so the
    worker built no backend to collect), in one process they were learned in it."""
    on_worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    known = [spec for spec, _ in specs()]
    assert backend_facts.adopted() == (known if on_worker else []), \
        "the learning process's answers did not reach this worker: run python tests/backend_facts.py to see why"
    for spec in known:
        assert facts(spec) == learn(spec), spec
    numpy = facts("numpy")
    assert numpy.runs and numpy.in_place and set(numpy.capabilities) == {"mutable", "overrides", "cpu"}


def test_a_backend_that_cannot_run_has_the_probes_reason_and_no_capabilities(registered_backend):
    def factory(device):
        raise BackendUnavailable("nohw", "no such hardware (buy some)", "a hint")

    spec = registered_backend("nohw", factory)
    assert learn(spec) == Facts(runs=False, reason="no such hardware (buy some) (a hint)")


def test_a_factory_that_raises_is_reported_as_the_registry_reports_it(registered_backend):
    def factory(device):
        return object()  # not a Backend

    spec = registered_backend("broken", factory)
    with pytest.raises(TypeError, match="returned object, not a Backend"):
        learn(spec)


def test_a_registered_backend_has_the_capabilities_its_build_gives(registered_backend):
    import numpy as np

    from portable_bp.ops import Ops

    def factory(device):
        return Backend(name="plain", xp=np, device="cpu", spec="plain", mutable=False, ops=Ops(np),
                       _to_numpy=np.asarray, _owns=lambda a: isinstance(a, np.ndarray))

    got = learn(registered_backend("plain", factory))
    assert got == Facts(runs=True, capabilities=("cpu",), overrides=(), in_place=False, hot_path="array-api")


def test_a_learning_process_that_fails_or_hangs_gives_no_answers():
    """The workers then learn the facts themselves."""
    assert Learning([sys.executable, "-c", "print('{}'); raise SystemExit(3)"]).answers() is None
    hung = Learning([sys.executable, "-c", "import time; time.sleep(60)"])
    assert hung.answers(timeout=0.5) is None and hung.process.returncode is not None


def _answering(text):
    return Learning([sys.executable, "-c", f"print({text!r})"])


def test_the_answers_of_the_processes_per_library_are_merged_and_one_failure_voids_them():
    good = [_answering('{"b": {"runs": true}}'), _answering('{"a": {"runs": false, "reason": "r"}}')]
    assert json.loads(all_answers(good)) == {"b": {"runs": True}, "a": {"runs": False, "reason": "r"}}
    assert list(json.loads(all_answers(good))) == ["b", "a"]  # the order the processes were given in
    failed = Learning([sys.executable, "-c", "raise SystemExit(1)"])
    assert all_answers([good[0], failed]) is None


def test_one_learning_process_per_library_in_the_registrys_order():
    specs_ = ["numpy", "torch", "torch:cuda", "jax", "jax:gpu", "cupy"]
    assert by_library(specs_) == [["numpy"], ["torch", "torch:cuda"], ["jax", "jax:gpu"], ["cupy"]]


class _Node:
    """What ``_ruled_out`` reads of a test: its markers."""

    def __init__(self, *marks):
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name):
        return [m for m in self.marks if m.name == name]


def test_requires_rules_out_by_the_facts_and_refuses_an_unknown_capability():
    assert _ruled_out(_Node(pytest.mark.requires("compiles")), "numpy")
    assert not _ruled_out(_Node(pytest.mark.requires("mutable", "cpu")), "numpy")
    with pytest.raises(ValueError, match=f"teleports.*{', '.join(CAPABILITIES)}"):
        _ruled_out(_Node(pytest.mark.requires("teleports")), "numpy")
