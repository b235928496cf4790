"""Every search's trials in an Optuna study in its run folder, for optuna-dashboard.

A Ray Tune callback records each trial as it starts (its values), each epoch as an intermediate
value at the trial's own epoch (the learning curves), and each end: finished trials with their
best epoch on search.metric (the score that picks the winner and that the searcher learns from,
tuning/searcher.py), stopped ones as pruned, failed ones as failed. It runs for every
search.algorithm (random and grid too) in the search's own process, apart from the searcher's
in-memory study, in SQLite: `optuna.db`. `raytune-ft dashboard RUN_DIR` serves it
(optuna-dashboard: trials, curves, parameter importances, parallel coordinates) while the
search runs. A resumed search goes on with the same study; trials cut off stay running there
until it does.

With search.objectives the study has two directions, and each trial ends with a pair: its best
epoch's metric and cost, as the searcher is told (tuning/searcher.py), read from epochs.jsonl. A
study of two objectives takes no intermediate values (no learning curves on the dashboard, which
shows the Pareto front instead) and prunes nothing: a stopped trial is complete with its pair.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray import tune

from raytune_ft.config import Config
from raytune_ft.report.pareto import trial_points
from raytune_ft.run_folder import read_epochs

STUDY_FILE = "optuna.db"


def study_url(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def space_distributions(space: dict) -> dict[str, BaseDistribution]:
    """search.space as Optuna distributions (randint's upper bound is exclusive, as in Ray Tune)."""
    make = {
        "loguniform": lambda a: FloatDistribution(a[0], a[1], log=True),
        "uniform": lambda a: FloatDistribution(a[0], a[1]),
        "randint": lambda a: IntDistribution(int(a[0]), int(a[1]) - 1),
        "choice": lambda a: CategoricalDistribution(a),
    }
    return {key: make[name](args) for key, spec in space.items() for name, args in spec.items()}


def never_stops_the_search(method):
    """The study is for watching: a failure to write it (a locked database, a full disk) is
    printed once, and the search goes on without it."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.broken:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure here must not end the search
            self.broken = True
            print(
                f"warning: {STUDY_FILE} is no longer written (the dashboard's study): {type(err).__name__}: {err}",
                file=sys.stderr,
            )
            return None

    return guarded


class OptunaStudyLog(tune.Callback):
    def __init__(self, run_dir: Path, config: Config):
        self.run_dir, self.config = Path(run_dir), config
        self.metric, self.mode = f"eval_{config.metric}", config.search.mode
        self.objectives = config.objectives  # [] for one goal
        self.distributions = space_distributions(config.search.space)
        self.study: optuna.Study | None = None  # opened at the first event (see __getstate__)
        self.broken = False  # a write failed: the search goes on without the study

    # Tune pickles its callbacks into the search's saved state: only what opens the study again.
    def __getstate__(self) -> dict:
        return {"run_dir": self.run_dir, "config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["run_dir"], state["config"])

    def _open(self) -> optuna.Study:
        if self.study is not None:
            return self.study
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            storage=optuna.storages.RDBStorage(study_url(self.run_dir)),
            study_name=self.run_dir.name,
            directions=[
                "maximize" if mode == "max" else "minimize" for _, mode in self.objectives or [(self.metric, self.mode)]
            ],
            sampler=optuna.samplers.RandomSampler(),  # never asked to sample: every value is given
            load_if_exists=True,  # a resumed search goes on with its study
        )
        # The dashboard's axes then say eval_f1 (and device_seconds), not "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([name for name, _ in self.objectives or [(self.metric, self.mode)]])
        # A resumed search: the Tune trials the study already holds, ended or with epochs so far.
        pick = max if self.mode == "max" else min
        self.trials: dict[str, optuna.trial.Trial] = {}
        self.best: dict[str, float] = {}  # each trial's best epoch so far
        self.done: set[str] = set()
        for frozen in self.study.get_trials(deepcopy=False):
            trial_id = frozen.user_attrs.get("trial_id")
            self.trials[trial_id] = optuna.trial.Trial(self.study, frozen._trial_id)
            if frozen.state.is_finished():
                self.done.add(trial_id)
            elif frozen.intermediate_values:
                self.best[trial_id] = pick(frozen.intermediate_values.values())
        return self.study

    @never_stops_the_search
    def on_trial_start(self, iteration, trials, trial, **info):
        study = self._open()
        if trial.trial_id in self.trials:
            return  # restarted (a dead process, PBT) or resumed: the same Optuna trial goes on
        values = {key: trial.config[key] for key in self.distributions if key in trial.config}
        study.enqueue_trial(values, user_attrs={"trial_id": trial.trial_id})
        self.trials[trial.trial_id] = study.ask(self.distributions)

    @never_stops_the_search
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._open()
        if self.objectives:
            return  # no intermediate values in a study of two objectives: the pair comes at the end
        score = result.get(self.metric)
        if trial.trial_id in self.done or trial.trial_id not in self.trials or not isinstance(score, (int, float)):
            return
        best = self.best.get(trial.trial_id)
        if best is None or (score > best if self.mode == "max" else score < best):
            self.best[trial.trial_id] = score
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an epoch said again after a restart: the first value stays
            self.trials[trial.trial_id].report(score, step=int(result["epoch"]))

    @never_stops_the_search
    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.objectives:
            # Its best epoch's pair, from the rows the run folder's log (an earlier callback) wrote.
            rows = [row for row in read_epochs(self.run_dir) if row["trial_id"] == trial.trial_id]
            points = trial_points(rows, self.objectives)
            self._tell(trial.trial_id, [points[0][key] for key, _ in self.objectives] if points else None)
            return
        result = trial.last_result or {}
        planned = (result.get("config") or trial.config).get("num_epochs", self.config.train.num_epochs)
        if int(result.get("epoch", 0)) < int(planned):
            self._tell(trial.trial_id, state=TrialState.PRUNED)  # stopped by the scheduler
        else:
            self._tell(trial.trial_id, self.best.get(trial.trial_id))

    @never_stops_the_search
    def on_trial_error(self, iteration, trials, trial, **info):
        self._tell(trial.trial_id, state=TrialState.FAIL)

    def _tell(self, trial_id: str, value: float | list | None = None, state: TrialState | None = None) -> None:
        self._open()
        if trial_id in self.done or trial_id not in self.trials:
            return
        if value is None and state is None:
            state = TrialState.FAIL  # ended without a score
        self.study.tell(self.trials[trial_id], value, state=state)
        self.done.add(trial_id)
