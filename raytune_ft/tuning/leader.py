"""The schedulers never stop the leader.

ASHA and PBT rank trials on config.scheduler_metric (eval_loss by default), which may not be the
search's metric: a trial can hold the best dev F1 of the search and still sit in the bottom half
on the loss. Stopping it (ASHA) or overwriting it with a copy of another trial (PBT's exploit)
would cut short the very trial the search is about to name its winner. So both schedulers here
keep track of the leader, the trial with the best score so far on the search's metric, and leave
it running; every other decision is Ray Tune's.
"""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler


class SearchLeader:
    """Which trial holds the best score so far on the search's metric (ties: the first to reach it)."""

    def __init__(self, metric: str, mode: str):
        self.metric, self.sign = metric, 1 if mode == "max" else -1
        self.trial_id: str | None = None
        self.best: float | None = None

    def observe(self, trial: Trial, result: dict) -> None:
        value = result.get(self.metric)
        if not isinstance(value, int | float) or math.isnan(value):
            return
        if self.best is None or self.sign * value > self.sign * self.best:
            self.trial_id, self.best = trial.trial_id, value

    def holds(self, trial: Trial) -> bool:
        return trial.trial_id == self.trial_id


class LeaderKeepingASHA(ASHAScheduler):
    """ASHA (Ray Tune's AsyncHyperBandScheduler) that lets the leader go on: its score is still
    recorded at the rung (the others are compared with it), but a STOP for it becomes CONTINUE."""

    def __init__(self, *, leader: SearchLeader, **asha_options):
        super().__init__(**asha_options)
        self.leader = leader

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self.leader.observe(trial, result)
        action = super().on_trial_result(tune_controller, trial, result)
        # At max_t the trial has run its last epoch: ASHA's STOP there ends nothing early.
        if action == TrialScheduler.STOP and self.leader.holds(trial) and result[self._time_attr] < self._max_t:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.leader.observe(trial, result or {})
        super().on_trial_complete(tune_controller, trial, result)


class LeaderKeepingPBT(PopulationBasedTraining):
    """PBT whose exploit never picks the leader as a trial to overwrite: it is left out of the
    bottom quantile (it may still be a donor in the top one)."""

    def __init__(self, *, leader: SearchLeader, **pbt_options):
        super().__init__(**pbt_options)
        self.leader = leader

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self.leader.observe(trial, result)
        return super().on_trial_result(tune_controller, trial, result)

    def _quantiles(self) -> tuple[list[Trial], list[Trial]]:
        lower, upper = super()._quantiles()
        return [trial for trial in lower if not self.leader.holds(trial)], upper
