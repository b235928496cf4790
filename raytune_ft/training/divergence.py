"""Divergence: a configuration whose training loss goes NaN/inf or blows up cannot train.

A module of its own, with no heavy imports: the training loop raises TrainingDiverged, the
Ray Train worker turns it into its return value (worker.py) and the trial driver raises it
again (trial.py), neither of which should import torch to know the class.
"""

from __future__ import annotations

import math
from collections import deque


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite, or blew up: this configuration cannot train."""


class DivergenceGuard:
    """Ends a run whose training loss is NaN/inf, or whose recent mean has blown up.

    Too large a learning rate rarely gives NaN in fp32: with lr=1.0 the loss of a MiniLM
    on MRPC climbs from 0.69 to 30-80 and stays there, and the run would waste its whole
    budget. The reference is the first step's loss, the untrained model's (any later
    baseline may already contain the blow-up); a mean over the last WINDOW steps above
    FACTOR times it is divergence.
    """

    WINDOW = 10
    FACTOR = 10.0

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate
        self.first_loss: float | None = None
        self.recent: deque[float] = deque(maxlen=self.WINDOW)

    def check(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss is {loss} at epoch {epoch} (learning_rate={self.learning_rate:g}); lower the learning rate"
            )
        if self.first_loss is None:
            self.first_loss = loss
            return
        self.recent.append(loss)
        recent_mean = sum(self.recent) / len(self.recent)
        if len(self.recent) == self.WINDOW and recent_mean > self.FACTOR * self.first_loss:
            raise TrainingDiverged(
                f"training loss diverged at epoch {epoch}: the last {self.WINDOW} steps average {recent_mean:.3g}, "
                f"over {self.FACTOR:g}x the untrained model's {self.first_loss:.3g} (learning_rate={self.learning_rate:g}); "
                "lower the learning rate"
            )
