"""Training on data already checked and on the device, for callers that own the epoch loop.

``fit`` checks every argument, takes snapshots, runs callbacks and publishes its state to
the network once per epoch: right for a user's call, wasted on a caller that drives many
short passes itself with data it has checked once (the scikit-learn adapter runs each of
its epochs in chunks of rows, with scikit-learn's own batch order, loss and stopping
rules). :class:`CheckedRun` is that caller's entry point: the same executor ``fit`` would
choose (:func:`~portable_bp.train.executors.executor_for`), the same step, the same eager
fallback when a compiled or captured executor fails, and nothing else. The caller keeps
the parameters and optimizer state between passes and hands them to the network itself
(``Network.restore_state``).
"""

from __future__ import annotations

import warnings

from ..transforms import NO_TRANSFORMS
from .executors import ExecutorFailed, executor_for
from .state import TrainState


class CheckedRun:
    """One fit's executor over pre-checked device arrays; see the module docstring."""

    def __init__(self, net, optimizer, transforms=NO_TRANSFORMS, count: int = 0):
        """``count``: the optimizer's step count at the first pass (steps it took in
        earlier calls). The step's random numbers stay keyed by the network's own step
        count, which advances with it."""
        self.net, self.optimizer, self.transforms = net, optimizer, transforms
        self.offset = net.steps_trained - count
        self.executor = executor_for(net, optimizer, transforms=transforms, offset=self.offset)

    def epoch(self, params, state, data, batch_size: int, rates, count: int) -> tuple[list, list, int, object]:
        """One pass over ``data`` (X, Z, weights or None: device arrays in the network's
        dtype, checked), in order, its first step the optimizer's step ``count``, with
        ``rates`` for its ``hyperparams``: (params, state, the step count after the pass,
        the summed loss on the device). A compiled or captured executor that fails is
        replaced by the eager one, once, with a warning, and the pass runs again from its
        start."""
        copy = None if self.executor.name == "eager" else TrainState(params, state, 0, 0).copy(self.net.ops)
        try:
            params, state, count_after, total = self.executor.epoch(params, state, count, data, None, batch_size,
                                                                    rates)
        except ExecutorFailed as exc:
            self._fall_back(exc)
            assert copy is not None
            return self.epoch(copy.params, copy.state, data, batch_size, rates, count)
        return params, state, count_after, total

    def _fall_back(self, exc: ExecutorFailed) -> None:
        name, backend = self.executor.name, self.net.backend
        backend.executor_failures[name] = str(exc)
        warnings.warn(f"the {name} executor failed on {backend.spec} ({exc}); running eagerly",
                      RuntimeWarning, stacklevel=3)
        self.executor = executor_for(self.net, self.optimizer, name="eager", transforms=self.transforms,
                                     offset=self.offset)
