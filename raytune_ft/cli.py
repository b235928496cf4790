"""raytune-ft: search, train, report, export.

Exit status: 0 on success, 2 for bad input (config, data, paths) with a one-line message,
1 for failures during the run. On success the last line names the run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime
from functools import wraps
from pathlib import Path

import click

from raytune_ft.config import ConfigError, load_config, resume_overrides
from raytune_ft.results import make_console

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C


def _set_quiet_defaults() -> None:
    # Progress bars for every dataset map and model save drown the real output.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _handle_errors(command):
    """Bad input -> one line and exit 2; anything else that breaks the run -> exit 1."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as err:  # noqa: BLE001 - the CLI boundary: report, do not crash with a traceback
            if os.environ.get("RAYTUNE_FT_DEBUG"):
                raise
            click.echo(f"error: the run failed: {type(err).__name__}: {err} (set RAYTUNE_FT_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key, e.g. --set search.num_samples=16 (value read as YAML). Repeatable.",
)


@click.group()
@click.version_option(package_name="raytune-ft")
def main():
    """Distributed hyperparameter search for fine-tuning transformers on text classification."""
    _set_quiet_defaults()


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
@set_option
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the interrupted search in this run folder (its config.yaml; no CONFIG_PATH).")
@click.option("--address", default=None, help="Connect to a running Ray cluster (auto, HOST:6379). Default: start Ray locally.")
@click.option("--verbose", is_flag=True, help="Stream the Ray workers' logs to the console.")
@click.option("--quiet", is_flag=True, help="No live progress (for CI logs): only failures, the summary and the run folder.")
@_handle_errors
def search(config_path, overrides, resume_dir, address, verbose, quiet):
    """Run a hyperparameter search described by CONFIG_PATH (YAML), or --resume RUN_DIR."""
    from raytune_ft.cluster import check_address
    from raytune_ft.report import print_summary
    from raytune_ft.results import CONFIG_FILE
    from raytune_ft.search import run_search
    from raytune_ft.summary import summarize_run

    check_address(address)
    if resume_dir:
        if config_path or overrides:
            raise ConfigError("--resume: give the run folder only; the search goes on with the config.yaml saved in it")
        if not (Path(resume_dir) / CONFIG_FILE).is_file():
            raise ConfigError(f"--resume {resume_dir}: not a run folder (no {CONFIG_FILE}); give a folder under runs/")
        config_path = Path(resume_dir) / CONFIG_FILE
        overrides = resume_overrides(config_path)
    elif not config_path:
        raise ConfigError("search: give a config file (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
    config = load_config(config_path, list(overrides))
    console = make_console()
    outcome = run_search(config, address=address, console=console, verbose=verbose, quiet=quiet, resume_dir=resume_dir)
    summary = summarize_run(outcome.run_dir)
    print_summary(summary, console)
    _write_report_files(summary, console)
    if outcome.best is None:
        click.echo(f"error: no trial reported a result; see the trials' error.txt files under {outcome.run_dir}", err=True)
        sys.exit(EXIT_RUN_FAILED)
    click.echo(f"run folder: {outcome.run_dir}")
    if outcome.outcome == "interrupted":  # Tune catches Ctrl-C and returns what it had
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _write_report_files(summary, console) -> dict:
    """Plots and report.html; a plotting problem must not turn a finished search into a failure."""
    from raytune_ft.report import write_report_files

    try:
        files = write_report_files(summary)
    except Exception as err:  # noqa: BLE001 - the search's results are safe in the run folder either way
        if os.environ.get("RAYTUNE_FT_DEBUG"):
            raise
        click.echo(f"warning: could not write the plots and report: {type(err).__name__}: {err}", err=True)
        return {}
    console.print(f"report: {files['report']} (plots in {Path(files['report']).parent / 'plots'})", highlight=False)
    return files


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False), required=True)
@set_option
@_handle_errors
def train(config_path, overrides):
    """One training run with the config's train values, no search (also under `accelerate launch`)."""
    from raytune_ft.data import prepare_tokenized_data
    from raytune_ft.reporting import RunFolderReporter
    from raytune_ft.results import CONFIG_FILE, read_epochs
    from raytune_ft.training import training_function

    config = load_config(config_path, list(overrides))
    # Under `accelerate launch` every process runs this command; only rank 0 writes.
    is_main = os.environ.get("RANK", "0") == "0"
    name = config.output.name or f"{config.task}-train-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = (Path(config.output.dir).expanduser() / name).resolve()
    if is_main and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"output: run folder {run_dir} already exists; choose another output.name or remove it")
    data_path, _ = prepare_tokenized_data(config)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    reporter = RunFolderReporter(run_dir, is_main_process=is_main)
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": True}, reporter)
    if is_main:
        last = read_epochs(run_dir)[-1]
        click.echo(", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.startswith("eval_")))
        click.echo(f"run folder: {run_dir}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False), required=True)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: rich tables for people; json: one JSON document on stdout for scripts.")
@click.option("--no-plots", is_flag=True, help="Do not write plots/ and report.html (tables or JSON only).")
@_handle_errors
def report(run_dir, output_format, no_plots):
    """Trials, per-epoch history, cost, plots and report.html of a run folder (finished, interrupted or running)."""
    from raytune_ft.report import dumps, print_summary, report_json
    from raytune_ft.results import CONFIG_FILE
    from raytune_ft.summary import summarize_run

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); give a folder under runs/")
    summary = summarize_run(run_dir)
    if output_format == "json":
        files = {} if no_plots else _write_report_files(summary, make_console(stderr=True))
        click.echo(dumps(report_json(summary, files)))
        return
    console = make_console()
    print_summary(summary, console, history=True)
    if not no_plots:
        _write_report_files(summary, console)
    click.echo(f"run folder: {run_dir.resolve()}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False), required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write the model into.")
@_handle_errors
def export(run_dir, out_dir):
    """Copy the best trial's model and tokenizer (save_pretrained layout) to --out."""
    from raytune_ft.results import BEST_FILE

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    best_path = run_dir / BEST_FILE
    if not best_path.is_file():
        raise ConfigError(f"{run_dir} has no {BEST_FILE}; is it a finished search's run folder?")
    best = json.loads(best_path.read_text(encoding="utf-8"))
    checkpoint = best.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise ConfigError(f"{run_dir}: the best trial kept no checkpoint (output.keep_checkpoints was off, or it was deleted)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir} exists and is not empty; choose a new folder")
    staging = out_dir.with_name(out_dir.name + ".writing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    (staging / "raytune_ft_best.json").write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)
    click.echo(f"exported trial {best['trial_id']} to {out_dir.resolve()}")


if __name__ == "__main__":
    main()
