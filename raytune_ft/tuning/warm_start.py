"""search.warm_start: a search that starts where earlier ones left off.

The ended trials of earlier run folders (the same task, model and search metric; under a model
search, a model it tries) are handed to Optuna before it suggests anything, as the tool's own
trials are told (tuning/searcher.py): each trial's best epoch, every epoch as an intermediate
value, stopped trials as pruned under TPE. They are not run again, and the points tried first
that an earlier search already ran are left out (the baseline included: this search then has no
baseline trial of its own). A trial whose values lie outside this search's space, or that ran
with other fixed values than this search's, is dropped with a note; a folder of another task,
model or metric, or of a PBT search, is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raytune_ft.config import SEARCHABLE, Config, inside_space, load_config
from raytune_ft.errors import ConfigError
from raytune_ft.run_folder import CONFIG_FILE, read_epochs, read_trial_events

USABLE = {"finished": False, "stopped early": True}  # ended trials a searcher can learn from: stopped?


@dataclass
class WarmTrial:
    params: dict  # this search's searched keys
    best: float  # its best epoch on the metric
    intermediate: dict[int, float]  # epoch -> score
    stopped_early: bool


def load_warm_start(config: Config) -> tuple[list[WarmTrial], list[str]]:
    """The earlier trials to hand to Optuna, and one note per folder on what was taken or dropped."""
    trials, notes = [], []
    for folder in config.search.warm_start:
        earlier = check_warm_folder(Path(folder), config)
        taken, dropped = warm_trials(Path(folder), earlier, config)
        trials += taken
        dropped_words = (
            f" ({dropped} dropped: values outside this search's space or other fixed values)" if dropped else ""
        )
        notes.append(f"warm start: {len(taken)} ended trials of {folder}{dropped_words}")
    return trials, notes


def check_warm_folder(folder: Path, config: Config) -> Config:
    """The earlier search's config; refused unless it is a run folder of the same task, model, metric."""
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(
            f"search.warm_start: {folder} is not a run folder (no {CONFIG_FILE}); give a folder under runs/"
        )
    earlier = load_config(folder / CONFIG_FILE)
    if earlier.search.scheduler == "pbt":
        raise ConfigError(
            f"search.warm_start: {folder} is a PBT search, whose trials changed their values as they ran; "
            "give a search with scheduler asha or fifo"
        )
    for what, mine, theirs in (
        ("task", config.task, earlier.task),
        ("search.metric", f"{config.metric} ({config.search.mode})", f"{earlier.metric} ({earlier.search.mode})"),
    ):
        if mine != theirs:
            raise ConfigError(
                f"search.warm_start: {folder} searched {what} {theirs}, this search {mine}; use a run of the same"
            )
    # A model search (search.space.model) may learn from the trials of the models it tries; the
    # trials of other models are dropped one by one (warm_trials), as other fixed values are.
    if not set(config.models()) & set(earlier.models()):
        raise ConfigError(
            f"search.warm_start: {folder} searched model {' or '.join(earlier.models())}, "
            f"this search {' or '.join(config.models())}; use a run of the same"
        )
    return earlier


def warm_trials(folder: Path, earlier: Config, config: Config) -> tuple[list[WarmTrial], int]:
    """(the usable trials, how many were dropped)."""
    ends = {event["trial_id"]: event["event"] for event in read_trial_events(folder) if event["event"] != "started"}
    starts = {event["trial_id"]: event["config"] for event in read_trial_events(folder) if event["event"] == "started"}
    key, pick = f"eval_{config.metric}", max if config.search.mode == "max" else min
    scores: dict[str, dict[int, float]] = {}
    for row in read_epochs(folder):
        if isinstance(row.get(key), (int, float)):
            scores.setdefault(row["trial_id"], {})[row["epoch"]] = row[key]
    taken, dropped = [], 0
    for trial_id, end in ends.items():
        if end not in USABLE or not scores.get(trial_id):
            continue  # failed, cut off, or never scored: nothing to learn
        # Every value the trial trained with (its searched ones, else the earlier config's): a key
        # fixed here must have had this search's value (the seed aside), a searched one lie in its space.
        values = {name: starts.get(trial_id, {}).get(name, earlier.value_of(name)) for name in SEARCHABLE}
        params = {name: values[name] for name in config.search.space}
        fixed = [name for name in SEARCHABLE if name not in config.search.space and name != "seed"]
        fixed_differ = any(values[name] != config.value_of(name) for name in fixed)
        if fixed_differ or not all(inside_space(config.search.space[name], params[name]) for name in params):
            dropped += 1
            continue
        epochs = scores[trial_id]
        taken.append(WarmTrial(params, pick(epochs.values()), epochs, stopped_early=USABLE[end]))
    return taken, dropped
