"""One summary per trial, and the search's cost, from a run folder alone.

Works the same on finished, interrupted and running searches: everything comes from the
files the search appends to as it goes (config.yaml, epochs.jsonl, trials.jsonl,
search.json), never from Ray.

Cost: a trial holds its devices from start to end, so its device-seconds are the devices it
reserved (CPU cores, or GPUs, fractions included) x its wall time. What early stopping saved
is an estimate: each stopped trial's remaining epochs x its mean measured epoch time.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raytune_ft.config import Config, ResourcesSection, load_config
from raytune_ft.report.baseline import BaselineComparison, compare_with_baseline
from raytune_ft.report.pareto import best_on_front
from raytune_ft.run_folder import (
    CONFIG_FILE,
    CONFIRM_FILE,
    HEARTBEAT_STALE,
    TEST_FILE,
    Best,
    best_epoch,
    find_best,
    read_epochs,
    read_json,
    read_predictions,
    read_search_state,
    read_trial_events,
)

# How trials end, as trials.jsonl records them; "running" is only ever derived.
ENDED = ("finished", "stopped early", "failed", "interrupted")


def trial_devices(resources: ResourcesSection) -> tuple[str, float]:
    """What one trial reserves: ("gpu", GPUs) when it uses GPUs, else ("cpu", CPU cores)."""
    return resources.trial_devices()


def device_unit(device_type: str) -> str:
    return "GPU-seconds" if device_type == "gpu" else "CPU core-seconds"


def model_label(name_or_path: str) -> str:
    """A model's short name for tables and plots (best.json keeps the full value): a package's
    name for pkg:<package>, else the last part of the folder or hub id (./models/minilm-l2: minilm-l2)."""
    return name_or_path.removeprefix("pkg:").rstrip("/").rsplit("/", 1)[-1] or name_or_path


def model_labels(names: list[str]) -> dict[str, str]:
    """Short names for the models of one search, told apart where model_label's would collide
    (runs/a/bert and runs/b/bert: a/bert and b/bert): as many trailing parts as make them differ."""
    parts = {name: name.removeprefix("pkg:").rstrip("/").split("/") for name in names}
    labels = {name: model_label(name) for name in names}
    for depth in range(2, 1 + max((len(p) for p in parts.values()), default=1)):
        clashing = [name for name in names if [*labels.values()].count(labels[name]) > 1]
        if not clashing:
            break
        for name in clashing:
            labels[name] = "/".join(parts[name][-depth:])
    return labels


@dataclass
class TrialSummary:
    trial_id: str
    status: str  # finished | stopped early | failed | interrupted | running
    config: dict  # the searched hyperparameters
    planned_epochs: int
    epochs: list[dict]  # its epochs.jsonl rows, in epoch order
    device_type: str
    devices: float
    started_at: float | None = None
    ended_at: float | None = None
    wall_seconds: float = 0.0
    error: str | None = None
    winner: bool = False
    baseline: bool = False  # ran the config's own train values
    tied: bool = False  # within dev-set noise of the winner (report/baseline.py)
    best_metric: float | None = None
    last_metric: float | None = None

    @property
    def epochs_done(self) -> int:
        return max((row["epoch"] for row in self.epochs), default=0)

    @property
    def device_seconds(self) -> float:
        return self.devices * self.wall_seconds

    @property
    def effective_batch_size(self) -> int | None:
        """Examples per optimizer step: batch x gradient accumulation x processes (the loop's rows)."""
        return self.epochs[-1].get("effective_batch_size") if self.epochs else None

    @property
    def saved_device_seconds(self) -> float:
        """Estimate: the epochs early stopping skipped, at this trial's mean measured epoch time."""
        if self.status != "stopped early" or not self.epochs:
            return 0.0
        mean_epoch = sum(row.get("epoch_seconds", 0.0) for row in self.epochs) / len(self.epochs)
        return max(0, self.planned_epochs - self.epochs_done) * mean_epoch * self.devices

    def to_json(self) -> dict:
        return {
            "trial_id": self.trial_id,
            "status": self.status,
            "winner": self.winner,
            "baseline": self.baseline,
            "tied_with_winner": self.tied,
            "config": self.config,
            "planned_epochs": self.planned_epochs,
            "epochs_done": self.epochs_done,
            "effective_batch_size": self.effective_batch_size,
            "best_metric": self.best_metric,
            "last_metric": self.last_metric,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "wall_seconds": self.wall_seconds,
            "device_type": self.device_type,
            "devices": self.devices,
            "device_seconds": self.device_seconds,
            "saved_device_seconds_estimate": self.saved_device_seconds,
            "error": self.error,
        }


@dataclass
class ModelSummary:
    """One model of a model search (search.space.model): its trials' best score and their cost."""

    model: str  # model.name_or_path, as the config names it
    trials: int
    trial_epochs: int  # epochs its trials reported
    best_metric: float | None
    best_trial: str | None
    device_seconds: float
    winner: bool  # the winner's model

    def to_json(self) -> dict:
        return {**asdict(self), "label": model_label(self.model)}


@dataclass
class RunSummary:
    run_dir: Path
    config: Config
    status: str  # the search's: running | finished | interrupted | failed | unknown
    rows: list[dict]  # epochs.jsonl, in the order epochs were reported
    trials: list[TrialSummary]  # in start order
    best: Best | None
    wall_seconds: float | None  # the whole search's, start to end (or now)
    searched: list[str] = field(default_factory=list)
    checkpoint_bytes: int | None = None  # what the kept checkpoints take on disk, measured at the search's end
    confirm: dict | None = None  # confirm.json: the top configs re-run with new seeds
    test: dict | None = None  # test.json: the winner on the test split
    baseline: BaselineComparison | None = None  # the search's best against the config's own values

    @property
    def metric_key(self) -> str:
        return f"eval_{self.config.metric}"

    @property
    def device_type(self) -> str:
        return trial_devices(self.config.resources)[0]

    @property
    def pareto_front(self) -> list[dict]:
        """search.objectives: the front's members as best.json lists them, best on the metric first; else []."""
        return (self.best.pareto_front or []) if self.best else []

    @property
    def device_seconds(self) -> float:
        return sum(trial.device_seconds for trial in self.trials)

    @property
    def saved_device_seconds(self) -> float:
        return sum(trial.saved_device_seconds for trial in self.trials)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        return counts

    def per_model(self) -> list[ModelSummary]:
        """Per model the trials used, in the config's order (search.space.model): which scored best, at what cost."""
        pick = max if self.config.search.mode == "max" else min
        by_model: dict[str, list[TrialSummary]] = {model: [] for model in self.config.models()}
        for trial in self.trials:
            by_model.setdefault(trial.config.get("model", self.config.model.name_or_path), []).append(trial)
        models = []
        for model, trials in by_model.items():
            scored = [trial for trial in trials if trial.best_metric is not None]
            best = pick(scored, key=lambda trial: trial.best_metric) if scored else None
            models.append(
                ModelSummary(
                    model=model,
                    trials=len(trials),
                    trial_epochs=sum(len(trial.epochs) for trial in trials),
                    best_metric=best.best_metric if best else None,
                    best_trial=best.trial_id if best else None,
                    device_seconds=sum(trial.device_seconds for trial in trials),
                    winner=any(trial.winner for trial in trials),
                )
            )
        return models

    def compute_curve(self) -> list[dict]:
        """Best-so-far metric after each reported epoch, against the compute spent until then.

        Device-seconds at a moment = every trial's devices x the part of its lifetime before that
        moment (trials running at the same time all count). Rows from before `reported_at`
        existed fall back to summing epoch times.
        """
        pick = max if self.config.search.mode == "max" else min
        by_id = {trial.trial_id: trial for trial in self.trials}
        points, best, fallback_seconds = [], None, 0.0
        for index, row in enumerate(self.rows, start=1):
            score = row.get(self.metric_key)
            if isinstance(score, (int, float)):
                best = score if best is None else pick(best, score)
            fallback_seconds += by_id[row["trial_id"]].devices * row.get("epoch_seconds", 0.0)
            at = row.get("reported_at")
            spent = self._device_seconds_at(at) if at is not None else fallback_seconds
            points.append({"trial_epochs": index, "device_seconds": spent, "best": best, "score": score})
        return points

    def _device_seconds_at(self, moment: float) -> float:
        spent = 0.0
        for trial in self.trials:
            if trial.started_at is None:
                continue
            end = trial.ended_at if trial.ended_at is not None else moment
            spent += trial.devices * max(0.0, min(end, moment) - trial.started_at)
        return spent


def summarize_run(run_dir: Path, now: float | None = None) -> RunSummary:
    run_dir = Path(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    now = time.time() if now is None else now
    rows = read_epochs(run_dir)
    state = read_search_state(run_dir)
    status = search_status(state)
    # Trials cut off without an end mark stop counting when the search stopped (or at their last epoch).
    cut_off = now if status == "running" else state.get("ended_at")
    trials = _trials(config, rows, read_trial_events(run_dir), status == "running", cut_off)
    searched = list(config.search.space)
    best = search_best(config, rows)
    confirm = read_json(run_dir, CONFIRM_FILE)
    # The winner: the search's best trial, or with a confirm stage the search trial of the config with the best mean.
    winner = best.trial_id if best is not None else None
    if confirm and confirm.get("winner") is not None:
        winner = confirm["candidates"][confirm["winner"]]["search"]["trial_id"]
    pick = max if config.search.mode == "max" else min
    for trial in trials:
        scores = [
            row[f"eval_{config.metric}"]
            for row in trial.epochs
            if isinstance(row.get(f"eval_{config.metric}"), (int, float))
        ]
        trial.best_metric = pick(scores) if scores else None
        trial.last_metric = scores[-1] if scores else None
        trial.winner = trial.trial_id == winner
    baseline = baseline_comparison(run_dir, config, trials, best)
    started = state.get("started_at")
    wall = ((state.get("ended_at") or now) - started) if started else None
    return RunSummary(
        run_dir,
        config,
        status,
        rows,
        trials,
        best,
        wall,
        searched,
        checkpoint_bytes=state.get("checkpoint_bytes"),
        confirm=confirm,
        test=read_json(run_dir, TEST_FILE),
        baseline=baseline,
    )


def search_best(config: Config, rows: list[dict]) -> Best | None:
    """The search's best epoch; with search.objectives the Pareto front's member best on the
    metric, with the front (report/pareto.py)."""
    if config.objectives:
        return best_on_front(rows, config.objectives, list(config.search.space))
    return find_best(rows, config.metric, config.search.mode, list(config.search.space))


def baseline_comparison(run_dir: Path, config: Config, trials: list[TrialSummary], best: Best | None):
    """The search's best trial against the baseline trial, the first to run the config's own
    train values (report/baseline.py); marks both kinds of trial. None when nothing was searched."""
    if best is None or not config.search.space:
        return None
    defaults = {key: config.value_of(key) for key in config.search.space}
    baseline = next((t for t in trials if {k: t.config.get(k) for k in defaults} == defaults), None)
    best_rows = {trial.trial_id: best_epoch(trial.epochs, config.metric, config.search.mode) for trial in trials}
    best_epochs = {trial_id: row for trial_id, row in best_rows.items() if row is not None}
    wanted = {(trial_id, row["epoch"]) for trial_id, row in best_epochs.items()}
    comparison = compare_with_baseline(
        config.metric,
        config.search.mode,
        best_epochs,
        baseline.trial_id if baseline else None,
        best.trial_id,
        read_predictions(run_dir, wanted),
    )
    for trial in trials:
        trial.baseline = baseline is not None and trial.trial_id == baseline.trial_id
        trial.tied = trial.trial_id in comparison.tied
    return comparison


def search_status(state: dict, now: float | None = None) -> str:
    """running | finished | interrupted | failed, or unknown for a run folder without search.json."""
    if not state:
        return "unknown"
    if state.get("ended_at"):
        return state.get("outcome", "finished")
    # No end mark: still running, unless its process is gone (killed without a chance to write it).
    if state.get("hostname") == socket.gethostname():
        return "running" if _process_alive(state.get("pid")) else "interrupted"
    # Another machine's search: its process cannot be asked, its heartbeat can.
    return "interrupted" if silent_for(state, now) > HEARTBEAT_STALE else "running"


def silent_for(state: dict, now: float | None = None) -> float:
    """Seconds since a search last wrote a sign of life to search.json (its heartbeat, a resume, its start)."""
    resumed = state.get("resumed_at") or [0.0]
    last = max(state.get("heartbeat_at") or 0.0, resumed[-1], state.get("started_at") or 0.0)
    return (now or time.time()) - last


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _trials(
    config: Config, rows: list[dict], events: list[dict], search_running: bool, cut_off: float | None
) -> list[TrialSummary]:
    device_type, devices = trial_devices(config.resources)
    trials: dict[str, TrialSummary] = {}

    def get(trial_id: str, params: dict) -> TrialSummary:
        if trial_id not in trials:
            trials[trial_id] = TrialSummary(
                trial_id=trial_id,
                status="running" if search_running else "interrupted",
                config=params,
                planned_epochs=int(params.get("num_epochs", config.train.num_epochs)),
                epochs=[],
                device_type=device_type,
                devices=devices,
            )
        return trials[trial_id]

    for event in events:
        trial = get(event["trial_id"], event.get("config", {}))
        if event["event"] == "restarted" and event.get("config"):
            # PBT restarted it with new values (tuning/pbt.py): show those it went on with, as Tune does.
            trial.config = event["config"]
        if event["event"] == "started":
            trial.started_at = event["time"]
            trial.planned_epochs = event.get("planned_epochs", trial.planned_epochs)
            trial.device_type, trial.devices = event.get("device_type", device_type), event.get("devices", devices)
        elif event["event"] in ENDED:
            trial.status, trial.ended_at, trial.error = event["event"], event["time"], event.get("error")
    for row in rows:
        get(row["trial_id"], {k: row[k] for k in config.search.space if k in row}).epochs.append(row)
    for trial in trials.values():
        trial.epochs.sort(key=lambda row: row["epoch"])
        if trial.started_at is not None:
            last_report = max((row.get("reported_at", 0) for row in trial.epochs), default=0)
            end = trial.ended_at or cut_off or max(last_report, trial.started_at)
            trial.wall_seconds = end - trial.started_at
        else:
            # A run folder from before trials.jsonl existed: its status and wall time are guesses.
            trial.wall_seconds = sum(row.get("epoch_seconds", 0.0) for row in trial.epochs)
            if not events:
                trial.status = "finished" if trial.epochs_done >= trial.planned_epochs else "stopped early"
    return list(trials.values())
