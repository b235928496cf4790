"""The Python API: what the CLI runs, for notebooks and scripts.

    import raytune_ft
    result = raytune_ft.search("configs/quickstart.yaml", overrides=["search.num_samples=2"])
    result.trials            # one row per trial (pandas DataFrame)
    result.epochs            # one row per trial and epoch
    result.best              # the winner: trial_id, config, metrics, checkpoint
    result.export("best/")   # its model and tokenizer, save_pretrained layout

A config is a YAML file's path, a dict shaped like one, or a Config; `overrides` are the
CLI's `--set` values ("train.learning_rate=3e-5"). Every error is a RaytuneFtError whose
message is the one line the CLI prints (ConfigError for bad input, RunFailed otherwise).
Heavy imports (Ray, torch) happen inside the functions, so importing this module is quick.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Union

from raytune_ft.config import Config, apply_override, load_config, resume_overrides, validate_config
from raytune_ft.errors import ConfigError, RaytuneFtError, RunFailed
from raytune_ft.run_folder import BEST_FILE, CONFIG_FILE, Best, new_run_dir, read_json, read_search_state

ConfigLike = Union[str, os.PathLike, dict, Config]


def _one_error_type(function):
    """Anything else that breaks a run becomes a RunFailed, its cause kept (err.__cause__)."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except RaytuneFtError:
            raise
        except Exception as err:
            raise RunFailed(f"the run failed: {type(err).__name__}: {err}") from err

    return wrapper


class RunResult:
    """A run folder, read back: a search's (finished, interrupted or still running) or a plain run's.

    Every property reads the run folder's files again, so a result of a running search stays current.
    """

    def __init__(self, run_dir: str | os.PathLike, report_files: dict | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.report_files = report_files or {}  # {"report": path, "plots": [paths]} once written

    def __repr__(self) -> str:
        return f"RunResult({str(self.run_dir)!r})"

    @property
    def summary(self):
        """The RunSummary (report/summary.py): trials, rows, best, cost, confirm and test results."""
        from raytune_ft.report.summary import summarize_run

        return summarize_run(self.run_dir)

    @property
    def status(self) -> str:
        """running | finished | interrupted | failed, or unknown (a plain run has no search.json)."""
        from raytune_ft.report.summary import search_status

        return search_status(read_search_state(self.run_dir))  # search.json alone, not the whole summary

    @property
    def config(self) -> Config:
        return load_config(self.run_dir / CONFIG_FILE)

    @property
    def best(self) -> Best | None:
        """The winner as best.json names it (after a confirm stage, the confirmed one), else the best epoch so far."""
        document = read_json(self.run_dir, BEST_FILE)
        return Best(**document) if document is not None else self.summary.best

    @property
    def trials(self):
        """One row per trial (index trial_id): status, searched hyperparameters, best and last metric, cost."""
        import pandas as pd

        rows = [
            {**{k: v for k, v in trial.to_json().items() if k != "config"}, **trial.config}
            for trial in self.summary.trials
        ]
        return pd.DataFrame(rows).set_index("trial_id") if rows else pd.DataFrame()

    @property
    def epochs(self):
        """One row per trial and epoch (epochs.jsonl): every eval_* and train_* metric and the hyperparameters."""
        import pandas as pd

        return pd.DataFrame(self.summary.rows)

    def export(self, out: str | os.PathLike, adapter_only: bool = False, trial_id: str | None = None) -> Path:
        """The winner's model and tokenizer (or trial_id's) into `out` (save_pretrained layout); see export()."""
        return export(self.run_dir, out, adapter_only, trial_id)

    def write_report(self) -> dict:
        """plots/*.png and report.html, written now; returns their paths."""
        from raytune_ft.report.html import write_report_files

        self.report_files = write_report_files(self.summary)
        return self.report_files


@_one_error_type
def search(
    config: ConfigLike | None = None,
    overrides: list[str] | tuple = (),
    *,
    address: str | None = None,
    resume: str | os.PathLike | None = None,
    takeover: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    console=None,
) -> RunResult:
    """Run a search (or with resume=RUN_DIR go on with an interrupted one; takeover=True also one
    that seems to run on another machine, which the caller knows is lost); prints progress lines
    (unless quiet), then the summary, and writes the report. An interrupted search (Ctrl-C)
    returns its result with status "interrupted"; a search in which no trial reported a result
    raises RunFailed."""
    from raytune_ft.report.tables import make_console, print_summary
    from raytune_ft.tuning.cluster import check_address
    from raytune_ft.tuning.run import run_search

    check_address(address)
    config = _search_config(config, overrides, resume)
    console = console or make_console()
    if takeover and resume is None:
        raise ConfigError("--takeover: only with --resume RUN_DIR")
    outcome = run_search(
        config, address=address, console=console, verbose=verbose, quiet=quiet, resume_dir=resume, takeover=takeover
    )
    result = RunResult(outcome.run_dir)
    summary = result.summary
    print_summary(summary, console)
    result.report_files = write_report(summary, console)
    if outcome.best is None:
        raise RunFailed(f"no trial reported a result; see the trials' error.txt files under {outcome.run_dir}")
    return result


def _search_config(config: ConfigLike | None, overrides, resume) -> Config:
    if resume is None:
        if config is None:
            raise ConfigError("search: give a config file (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
        return load(config, overrides)
    if config is not None or overrides:
        raise ConfigError("--resume: give the run folder only; the search goes on with the config.yaml saved in it")
    saved = Path(resume) / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"--resume {resume}: not a run folder (no {CONFIG_FILE}); give a folder under runs/")
    return load_config(saved, resume_overrides(saved))


@_one_error_type
def train(config: ConfigLike, overrides: list[str] | tuple = ()) -> RunResult:
    """One training run with the config's train values: no search, no Ray (also under
    `accelerate launch`, where every process calls this and only rank 0 writes)."""
    from raytune_ft.data.tokenized import prepare_tokenized_data
    from raytune_ft.training.loop import training_function
    from raytune_ft.training.reporters import RunFolderReporter

    config = load(config, overrides)
    is_main = os.environ.get("RANK", "0") == "0"
    # Under `accelerate launch` every process runs this; only rank 0 checks and writes.
    run_dir = new_run_dir(config.output.dir, config.output.name, f"{config.task}-train", check=is_main)
    data_path, _ = prepare_tokenized_data(config)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    reporter = RunFolderReporter(run_dir, is_main_process=is_main)
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": True}, reporter)
    return RunResult(run_dir)


@_one_error_type
def load_run(run_dir: str | os.PathLike) -> RunResult:
    """A run folder read back (finished, interrupted, running, or a plain run's)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); give a folder under runs/")
    return RunResult(run_dir)


@_one_error_type
def export(
    run_dir: str | os.PathLike, out: str | os.PathLike, adapter_only: bool = False, trial_id: str | None = None
) -> Path:
    """Copy the best trial's model and tokenizer (save_pretrained layout) to `out`, with
    raytune_ft_best.json beside them. A LoRA winner is merged into its pretrained model, a plain
    model that loads without peft; adapter_only: its adapters and head as peft saved them.
    trial_id: another trial's best epoch instead, one on the Pareto front (search.objectives) or
    any whose checkpoint was kept. `out` must be new or empty; nothing half-copied is left there."""
    from raytune_ft.training.model import is_adapter_checkpoint

    run_dir, out_dir = Path(run_dir), Path(out)
    best = read_json(run_dir, BEST_FILE)
    if best is None:
        raise ConfigError(f"{run_dir} has no {BEST_FILE}; is it a finished search's run folder?")
    if trial_id is not None and trial_id != best["trial_id"]:
        best = _trial_to_export(run_dir, best, trial_id)
    checkpoint = best.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise ConfigError(
            f"{run_dir}: the best trial kept no checkpoint (output.keep_checkpoints was off, or it was deleted)"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir} exists and is not empty; choose a new folder")
    if adapter_only and not is_adapter_checkpoint(checkpoint):
        raise ConfigError(f"--adapter-only: the winner of {run_dir} was fully fine-tuned (no adapters); leave it out")
    staging = out_dir.with_name(out_dir.name + ".writing")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_model(checkpoint, staging, run_dir, best["config"], adapter_only)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / "raytune_ft_best.json").write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)
    return out_dir.resolve()


def _trial_to_export(run_dir: Path, best: dict, trial_id: str) -> dict:
    """What export writes for `--trial ID`: its entry in best.json's Pareto front, or else its best
    epoch among those that kept a checkpoint; one line naming the trials that can be exported if neither."""
    from raytune_ft.tuning.checkpoints import best_checkpointed_rows

    for member in best.get("pareto_front") or []:
        if member["trial_id"] == trial_id and member.get("checkpoint") and Path(member["checkpoint"]).is_dir():
            return member
    config = load_config(run_dir / CONFIG_FILE)
    rows = best_checkpointed_rows(run_dir, config.metric, config.search.mode)
    kept = {trial: row for trial, row in rows.items() if Path(row["checkpoint_path"]).is_dir()}
    if trial_id in kept:
        return Best.from_row(kept[trial_id], list(config.search.space)).to_json()
    what = "kept no checkpoint (output.keep_checkpoints)" if trial_id in rows else "is not a trial of this search"
    raise ConfigError(
        f"--trial {trial_id}: it {what}; trials of {run_dir} with a kept checkpoint: {', '.join(kept) or 'none'}"
    )


def _write_model(checkpoint: str, out: Path, run_dir: Path, trial_values: dict, adapter_only: bool) -> None:
    """The model export writes: the checkpoint as it is (a full model, or adapters with
    adapter_only), or adapters merged into the pretrained model; never the training state."""
    from raytune_ft.training.checkpointing import TRAINING_STATE_FILE
    from raytune_ft.training.model import is_adapter_checkpoint, save_merged

    if is_adapter_checkpoint(checkpoint) and not adapter_only:
        save_merged(checkpoint, out, load_config(run_dir / CONFIG_FILE).for_trial(trial_values))
    else:
        shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns(TRAINING_STATE_FILE))


@_one_error_type
def dashboard(run_dir: str | os.PathLike, port: int = 8080) -> None:
    """Serve the search's Optuna study (optuna.db) with optuna-dashboard on 127.0.0.1:port until
    stopped (Ctrl-C); a running search's trials appear as they report."""
    from raytune_ft.tuning.study import STUDY_FILE, study_url

    run_dir = Path(run_dir)
    if not (run_dir / STUDY_FILE).is_file():
        raise ConfigError(
            f"{run_dir} has no {STUDY_FILE}; give the run folder of a search (a search writes it as it runs)"
        )
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError("raytune-ft dashboard needs optuna-dashboard: pip install 'raytune-ft[dashboard]'") from None
    run_server(study_url(run_dir), host="127.0.0.1", port=port)


def load(config: ConfigLike, overrides: list[str] | tuple = ()) -> Config:
    """A Config from a YAML path, a raw dict or a Config, with `--set`-style overrides applied."""
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, list(overrides))
    if isinstance(config, Config):
        raw: dict[str, Any] = config.model_dump(mode="json")
    elif isinstance(config, dict):
        raw = copy.deepcopy(config)
    else:
        raise ConfigError(f"config: give a YAML file's path, a dict or a Config, not a {type(config).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw)


def write_report(summary, console) -> dict:
    """Plots and report.html; a plotting problem must not turn a finished search into a failure."""
    from raytune_ft.report.html import write_report_files

    try:
        files = write_report_files(summary)
    except Exception as err:  # noqa: BLE001 - the search's results are safe in the run folder either way
        if os.environ.get("RAYTUNE_FT_DEBUG"):
            raise
        print(f"warning: could not write the plots and report: {type(err).__name__}: {err}", file=sys.stderr)
        return {}
    console.print(f"report: {files['report']} (plots in {Path(files['report']).parent / 'plots'})", highlight=False)
    return files
