"""Experiment tracking: every trial's epochs in TensorBoard (default) and MLflow (optional).

Both get the same scalars under the same names (eval/accuracy, eval/loss, train/loss,
train/learning_rate, ...), one step per epoch, one run per trial named by its trial id, and
the trial's searched hyperparameters (TensorBoard's HParams tab, MLflow params). Both are
local files unless told otherwise: no account, no server, no network.

TensorBoard: <run folder>/tensorboard/<trial_id>/. Ray Tune would otherwise add its own
TensorBoard logger, which writes every result key (timers, pids, ...) under ray/tune/ into
tune/<long trial folder name>/; a TBXLoggerCallback subclass in the callbacks keeps it out,
so there is one place to look.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ray.tune.logger import LoggerCallback
from ray.tune.logger.tensorboardx import TBXLoggerCallback

from raytune_ft.config import Config, ConfigError

TENSORBOARD_DIR = "tensorboard"
MLFLOW_MISSING = 'tracking.mlflow: MLflow is not installed; pip install -e ".[mlflow]" or set tracking.mlflow=false'

# Result keys that are not eval_* metrics, and the names they are tracked under.
TRAIN_SCALARS = {
    "train_loss": "train/loss",
    "last_learning_rate": "train/learning_rate",  # where the schedule is at the end of the epoch
    "train_samples_per_second": "train/samples_per_second",
    "epoch_seconds": "time/epoch_seconds",
}


def epoch_scalars(result: dict) -> dict[str, float]:
    """One epoch's result as tracked scalars: eval_f1 -> eval/f1, train_loss -> train/loss, ..."""
    scalars = {}
    for key, value in result.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("eval_"):
            scalars[f"eval/{key[len('eval_') :]}"] = float(value)
        elif key in TRAIN_SCALARS:
            scalars[TRAIN_SCALARS[key]] = float(value)
    return scalars


def tracking_callbacks(config: Config, run_dir: Path) -> list[LoggerCallback]:
    callbacks: list[LoggerCallback] = [
        TensorBoardLog(run_dir / TENSORBOARD_DIR) if config.tracking.tensorboard else NoTensorBoard()
    ]
    if config.tracking.mlflow:
        uri = config.tracking.mlflow_tracking_uri or default_mlflow_uri(config)
        callbacks.append(MLflowLog(uri, config.tracking.mlflow_experiment or run_dir.name))
    return callbacks


def default_mlflow_uri(config: Config) -> str:
    # One SQLite file beside the run folders: `mlflow ui --backend-store-uri <this>` shows every
    # search as an experiment. (MLflow 3 refuses a plain ./mlruns folder store by default.)
    return f"sqlite:///{(Path(config.output.dir).expanduser() / 'mlflow.db').resolve()}"


def check_tracking_available(config: Config) -> None:
    """Before the search starts: a configured tracker that cannot run is bad input (exit 2)."""
    if config.tracking.mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError(MLFLOW_MISSING) from None


class TensorBoardLog(TBXLoggerCallback):
    """Per trial, per epoch scalars into <log_dir>/<trial_id>/; hparams when the trial ends
    (Ray's TBXLoggerCallback.log_trial_end writes them from what is kept here)."""

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = log_dir

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self._trial_writer[trial] = self._summary_writer_cls(str(self.log_dir / trial.trial_id), flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        scalars = epoch_scalars(result)
        writer = self._trial_writer[trial]
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=result["epoch"])
        writer.flush()
        self._trial_result[trial] = scalars  # the last epoch's, for the hparams summary


class NoTensorBoard(TBXLoggerCallback):
    """tracking.tensorboard=false: a TBXLoggerCallback that writes nothing, so Tune adds none."""

    def __init__(self):  # no tensorboardX needed to write nothing
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


class MLflowLog(LoggerCallback):
    """One MLflow run per trial in one experiment per search. The client API, not mlflow's
    global active run: trials run at the same time and each needs its own run."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = None  # made in setup(): Tune pickles callbacks before, a client cannot be
        self.runs: dict = {}  # trial -> MLflow run id

    def setup(self, *args, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        # The SQLite store announces its table migrations on INFO; the search's output is ours.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)

    def log_trial_start(self, trial) -> None:
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id, run_name=trial.trial_id, tags={"raytune_ft.trial_id": trial.trial_id}
        )
        self.runs[trial] = run.info.run_id
        params = [Param(key, str(value)) for key, value in trial.config.items()]
        if params:
            self.client.log_batch(run.info.run_id, params=params)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        from mlflow.entities import Metric

        if trial not in self.runs:
            self.log_trial_start(trial)
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, result["epoch"]) for key, value in epoch_scalars(result).items()]
        self.client.log_batch(self.runs[trial], metrics=metrics)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self.runs.pop(trial, None)
        if run_id:
            self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials, **info) -> None:
        # An interrupted search: trials still running get no end call of their own.
        for run_id in self.runs.values():
            self.client.set_terminated(run_id, "KILLED")
        self.runs.clear()
