"""The state of a fit in progress, and the copies it falls back on.

:class:`TrainState` is what the step updates: parameters, optimizer state (one entry per
layer) and the step count. It is handed to the network (:meth:`TrainState.publish`) once
per epoch, after the epoch's one host read has shown it finite; in between, the network's
arrays may be being updated in place.

:class:`Snapshots` keeps the state at the start of the current epoch and of the one before,
as device copies (immutable JAX arrays are their own copies): a diverged or interrupted
epoch is replayed from them, never from a host transfer.
"""

from __future__ import annotations

from ..optim import flat_slots


class TrainState:
    """Parameters, per-layer optimizer state and step count of one fit; ``offset`` is how
    many steps the network took before this fit's count 0 (in earlier fits): dropout masks
    are keyed by offset + count, so each fit continues the network's stream of masks."""

    __slots__ = ("params", "state", "count", "epoch", "offset")

    def __init__(self, params, state, count, epoch, offset=0):
        self.params, self.state, self.count, self.epoch = list(params), list(state), count, epoch
        self.offset = offset

    def arrays(self) -> list:
        """Every array: each W and b, then each optimizer slot."""
        out = [a for pair in self.params for a in pair]
        for layer in self.state:
            for slot in (layer or {}).values():
                out += list(slot)
        return out

    def copy(self, ops) -> TrainState:
        """A copy whose arrays the step may write into without touching this one's."""
        def cp(a):
            return ops.xp.asarray(a, copy=True)

        params = [(cp(W), cp(b)) for W, b in self.params]
        state = [{name: tuple(cp(a) for a in slot) for name, slot in (layer or {}).items()}
                 for layer in self.state]
        return TrainState(params, state, self.count, self.epoch, self.offset)

    def publish(self, net, optimizer) -> None:
        """Hand the state to the network: parameters (adopted, already checked finite),
        optimizer state as checkpoints store it, and the epochs completed."""
        net.restore_state(params=self.params, epochs_trained=self.epoch, steps_trained=self.offset + self.count,
                          optimizer_state=(optimizer, {"step": self.count, "slots": flat_slots(self.state)}))


class Snapshots:
    """Copies of the train state at the start of this epoch and of the previous one."""

    def __init__(self, ops, mutable: bool):
        self.ops, self.mutable = ops, mutable
        self.previous: TrainState | None = None
        self.current: TrainState | None = None

    def take(self, state: TrainState) -> None:
        """Keep ``state`` (an epoch's start); the older of the two kept is let go first."""
        self.previous, self.current = self.current, None
        self.current = state.copy(self.ops) if self.mutable else _same(state)

    def restore(self, which: TrainState | None) -> TrainState:
        """A state to continue from ``which``: a copy where the step writes in place, so
        the snapshot itself stays intact for another replay."""
        if which is None:
            raise RuntimeError("no snapshot was taken")
        return which.copy(self.ops) if self.mutable else _same(which)


def _same(state: TrainState) -> TrainState:
    return TrainState(state.params, state.state, state.count, state.epoch, state.offset)
