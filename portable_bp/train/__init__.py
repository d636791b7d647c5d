"""Training (E12) and inference: ``fit``, ``predict``, ``evaluate``, and their callbacks.

* :mod:`.loop`: the epoch loop (``fit``);
* :mod:`.setup`: every check ``fit`` makes before its first step;
* :mod:`.executors`: how the step runs (eager, or compiled by the backend);
* :mod:`.state`: the train state and its epoch snapshots;
* :mod:`.divergence`: finding a NaN/inf and falling back to the last finite state;
* :mod:`.callbacks`: history, early stopping, checkpoints, the progress bar;
* :mod:`.inference`: ``predict`` and ``evaluate`` in batches.
"""

from .callbacks import Callback, Checkpoint, EarlyStopping, History, ProgressBar
from .divergence import TrainingDiverged
from .inference import evaluate, predict
from .loop import fit

__all__ = ["fit", "predict", "evaluate", "Callback", "Checkpoint", "EarlyStopping", "History",
           "ProgressBar", "TrainingDiverged"]
