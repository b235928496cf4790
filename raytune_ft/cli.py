"""raytune-ft search | train | report | export | dashboard: a thin layer over the Python API (api.py).

Exit status: 0 on success, 2 for bad input (config, data, paths) with a one-line message,
1 for failures during the run, 130 after Ctrl-C. On success the last line names the run folder.
"""

from __future__ import annotations

import json
import os
import sys
from functools import wraps
from pathlib import Path

import click

from raytune_ft import api
from raytune_ft.environment import CLI_DEFAULTS, set_defaults
from raytune_ft.errors import ConfigError, RaytuneFtError, RunFailed

EXIT_BAD_INPUT = ConfigError.exit_code  # 2
EXIT_RUN_FAILED = RunFailed.exit_code  # 1
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
DEBUG_HINT = " (set RAYTUNE_FT_DEBUG=1 for the traceback)"


def _handle_errors(command):
    """A RaytuneFtError -> `error: <its line>` and its exit code; Ctrl-C -> exit 130; anything
    else that breaks (outside the API's own wrapping) -> one line and exit 1."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RaytuneFtError as err:
            if os.environ.get("RAYTUNE_FT_DEBUG") and err.__cause__ is not None:
                raise err.__cause__ from None
            click.echo(f"error: {err}{DEBUG_HINT if err.__cause__ is not None else ''}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as err:  # noqa: BLE001 - the CLI boundary: report, do not crash with a traceback
            if os.environ.get("RAYTUNE_FT_DEBUG"):
                raise
            click.echo(f"error: the run failed: {type(err).__name__}: {err}{DEBUG_HINT}", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set search.num_samples=16 (value read as YAML). Repeatable.",
)


@click.group()
@click.version_option(package_name="raytune-ft")
def main():
    """Distributed hyperparameter search for fine-tuning transformers on text classification."""
    set_defaults(CLI_DEFAULTS)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
@set_option
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Continue the interrupted search in this run folder (its config.yaml; no CONFIG_PATH).",
)
@click.option(
    "--takeover",
    is_flag=True,
    help="With --resume: go on with a search that seems to run on another machine (one you know is lost).",
)
@click.option(
    "--address", default=None, help="Connect to a running Ray cluster (auto, HOST:6379). Default: start Ray locally."
)
@click.option("--verbose", is_flag=True, help="Stream the Ray workers' logs to the console.")
@click.option(
    "--quiet", is_flag=True, help="No live progress (for CI logs): only failures, the summary and the run folder."
)
@_handle_errors
def search(config_path, overrides, resume_dir, takeover, address, verbose, quiet):
    """Run a hyperparameter search described by CONFIG_PATH (YAML), or --resume RUN_DIR."""
    result = api.search(
        config_path,
        list(overrides),
        address=address,
        resume=resume_dir,
        takeover=takeover,
        quiet=quiet,
        verbose=verbose,
    )
    click.echo(f"run folder: {result.run_dir}")
    if result.status == "interrupted":  # Tune catches Ctrl-C and returns what it had
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False), required=True)
@set_option
@_handle_errors
def train(config_path, overrides):
    """One training run with the config's train values, no search (also under `accelerate launch`)."""
    result = api.train(config_path, list(overrides))
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch` only rank 0 wrote the run folder
        last = result.summary.rows[-1]
        click.echo(", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.startswith("eval_")))
        click.echo(f"run folder: {result.run_dir}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False), required=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: rich tables for people; json: one JSON document on stdout for scripts.",
)
@click.option("--no-plots", is_flag=True, help="Do not write plots/ and report.html (tables or JSON only).")
@_handle_errors
def report(run_dir, output_format, no_plots):
    """Trials, per-epoch history, cost, plots and report.html of a run folder (finished, interrupted or running)."""
    from raytune_ft.report.tables import dumps, make_console, print_summary, report_json

    summary = api.load_run(run_dir).summary
    if output_format == "json":
        files = {} if no_plots else api.write_report(summary, make_console(stderr=True))
        click.echo(dumps(report_json(summary, files)))
        return
    console = make_console()
    print_summary(summary, console, history=True)
    if not no_plots:
        api.write_report(summary, console)
    click.echo(f"run folder: {Path(run_dir).resolve()}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False), required=True)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write the model into."
)
@click.option(
    "--adapter-only", is_flag=True, help="LoRA: write the adapters and head as peft saved them, not a merged model."
)
@click.option(
    "--trial",
    "trial_id",
    default=None,
    help="Another trial's best epoch: one on the Pareto front (search.objectives), or any that kept a checkpoint.",
)
@_handle_errors
def export(run_dir, out_dir, adapter_only, trial_id):
    """Copy the best trial's model and tokenizer (save_pretrained layout) to --out, or with --trial
    another trial's. A LoRA model is merged into its pretrained model: it loads with
    AutoModelForSequenceClassification alone."""
    out = api.export(run_dir, out_dir, adapter_only, trial_id)
    exported = json.loads((out / "raytune_ft_best.json").read_text(encoding="utf-8"))
    click.echo(f"exported trial {exported['trial_id']} to {out}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False), required=True)
@click.option("--port", type=int, default=8080, show_default=True, help="Port on 127.0.0.1 to serve it on.")
@_handle_errors
def dashboard(run_dir, port):
    """Serve the search's Optuna study with optuna-dashboard (trials, learning curves, parameter importances)."""
    click.echo(f"Optuna dashboard of {Path(run_dir).resolve()} at http://127.0.0.1:{port}/ (Ctrl-C stops it)")
    api.dashboard(run_dir, port)


if __name__ == "__main__":
    main()
