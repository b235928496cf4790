"""The searcher learns from the score that picks the winner: each trial's best epoch.

Ray's OptunaSearch tells Optuna a trial's last reported result when the trial completes. The
tool picks its winner (and exports its model) by the best epoch over all trials, so a trial that
peaked at epoch 2 and overfit by epoch 4 would teach Optuna the epoch-4 score while its epoch-2
model is the one exported. `BestEpochOptunaSearch` records every epoch as an intermediate value
(step = the trial's own epoch) and tells each trial's best epoch on search.metric.

A trial the scheduler stopped before its planned epochs is told as pruned with those values
under TPE, which weighs a pruned trial by how far it got rather than as a finished one whose
score is its early one. GPSampler leaves pruned trials out of its model altogether, so under gp
such a trial is told as complete with its best epoch: a lower bound of what its values reach,
which is what ASHA judged it on.

search.objectives (two goals): Optuna's study has two directions and each trial is told a pair,
its best epoch's metric and that epoch's cost (device_seconds or trainable_parameters): the point
of report/pareto.py's front. A study of several objectives takes no intermediate values and
prunes nothing, so a stopped trial is told as complete with its pair, under tpe as under gp.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class BestEpochOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *,
        planned_epochs: int,
        tell_stopped_as_pruned: bool,
        warm_trials: list = (),
        objectives: list[tuple[str, str]] = (),
        **optuna_search_options,
    ):
        """objectives: config.objectives, [(metric, mode), (cost, "min")] for a study of two goals
        (then metric and mode go to OptunaSearch as these lists), or () for one."""
        self._default_epochs = planned_epochs  # train.num_epochs, where num_epochs is not searched
        self._tell_stopped_as_pruned = tell_stopped_as_pruned and not objectives
        self._warm_trials = list(warm_trials)  # earlier searches' trials (tuning/warm_start.py)
        self._best_scores: dict[str, float] = {}  # trial_id -> its best epoch so far (saved with the searcher)
        self._cost = objectives[1][0] if objectives else None  # the second objective's key
        self._best_costs: dict[str, float] = {}  # trial_id -> the cost at its best epoch so far
        if objectives:
            optuna_search_options.update(metric=[key for key, _ in objectives], mode=[mode for _, mode in objectives])
        super().__init__(**optuna_search_options)
        # The metric that picks each trial's best epoch (the first objective).
        self._score_key, self._score_mode = (
            (self._metric[0], self._mode[0]) if objectives else (self._metric, self._mode)
        )

    def _setup_study(self, mode):
        """Ray's study, then the warm start's trials in it, told as this search's own would be."""
        super()._setup_study(mode)
        for warm in self._warm_trials:
            pruned = self._tell_stopped_as_pruned and warm.stopped_early
            self._ot_study.add_trial(
                optuna.trial.create_trial(
                    params=warm.params,
                    distributions={name: self._space[name] for name in warm.params},
                    value=list(warm.intermediate.values())[-1] if pruned else warm.best,
                    intermediate_values=warm.intermediate,
                    state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                )
            )
        self._warm_trials = []  # in the study now (which the searcher's saved state holds)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        score = result.get(self._score_key)
        if not isinstance(score, (int, float)):
            return
        best = self._best_scores.get(trial_id)
        better = best is None or (score > best if self._score_mode == "max" else score < best)
        self._best_scores[trial_id] = score if better else best
        if self._cost:
            if better:
                self._best_costs[trial_id] = result.get(self._cost)
            return  # a study of two objectives takes no intermediate values
        with warnings.catch_warnings():
            # An epoch said again after a restart is already recorded: Optuna keeps the first.
            warnings.simplefilter("ignore")
            self._ot_trials[trial_id].report(score, step=int(result.get("epoch", 0)))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self.on_trial_result(trial_id, result)  # a last result that did not come through on_trial_result
        best, cost = self._best_scores.pop(trial_id, None), self._best_costs.pop(trial_id, None)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)  # as Ray does (a warning)
            return
        ot_trial = self._ot_trials[trial_id]
        if self._cost:
            # Stopped early or not: complete, with its best epoch's pair (see the module's docstring).
            # (Ray would tell a failed trial a pair of Nones, which Optuna refuses.)
            if error or not all(isinstance(value, (int, float)) for value in (best, cost)):
                self._ot_study.tell(ot_trial, state=TrialState.FAIL if error else TrialState.PRUNED)
            else:
                self._ot_study.tell(ot_trial, [best, cost])
        elif error or best is None:
            super().on_trial_complete(trial_id, result, error)  # failed, or nothing reported: as Ray does
            return
        elif self._tell_stopped_as_pruned and self._stopped_early(trial_id, result):
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)  # Optuna keeps its last intermediate value
        else:
            self._ot_study.tell(ot_trial, best)
        self._completed_trials.add(trial_id)

    def _stopped_early(self, trial_id: str, result: dict | None) -> bool:
        """Whether the trial ended before its planned epochs (the scheduler stopped it). Its epoch
        count is its Optuna values' (Tune hands searchers a flattened result: no "config" in it)."""
        if not result or "epoch" not in result:
            return False
        planned = self._ot_trials[trial_id].params.get("num_epochs", self._default_epochs)
        return int(result["epoch"]) < int(planned)
