"""A search's report as text: terminal tables (rich) and a JSON document.

Both, and report.html (html.py), show the same content, built once from a RunSummary as rows
of text cells: the trials (one row each, the winner marked), every trial's per-epoch history,
the confirm stage, and the cost.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from raytune_ft.report.baseline import candidates_words
from raytune_ft.report.summary import RunSummary, device_unit, model_label, model_labels

WINNER_MARK = "★"
TIED_MARK = "≈"  # within dev-set noise of the winner (report/baseline.py)
SAVINGS_METHOD = "estimate: each stopped trial's remaining epochs x its mean measured epoch time x its devices"


def format_value(value, digits: int = 4) -> str:
    """Metrics with 4 decimals; small values such as learning rates in scientific notation."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and abs(value) < 1e-2 else f"{value:.{digits}f}"
    return str(value)


def format_setting(settings: dict, name: str) -> str:
    """A hyperparameter's value; null (max_grad_norm: no clipping) as a config writes it; a model by its short name."""
    if name not in settings:
        return ""
    if name == "model":
        return model_label(settings[name])
    return "null" if settings[name] is None else format_value(settings[name])


# ---------------------------------------------------------------------------------------
# The content, as text cells


def unit_column(summary: RunSummary) -> str:
    """The compute column's header: device_unit, short."""
    return "GPU-s" if summary.device_type == "gpu" else "CPU core-s"


def trials_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    unit = unit_column(summary)
    batches = shows_effective_batch(summary.config, summary.searched)
    headers = ["trial", "status", *summary.searched, *(["eff. batch"] if batches else []), "epochs", "best", "last"]
    headers += ["wall s", unit]
    rows = []
    for trial in summary.trials:
        rows.append(
            [
                trial_label(trial),
                trial.status,
                *(format_setting(trial.config, name) for name in summary.searched),
                *([format_value(trial.effective_batch_size)] if batches else []),
                f"{trial.epochs_done}/{trial.planned_epochs}",
                format_value(trial.best_metric),
                format_value(trial.last_metric),
                f"{trial.wall_seconds:.0f}",
                f"{trial.device_seconds:.0f}",
            ]
        )
    return headers, rows


def shows_effective_batch(config, searched: list[str]) -> bool:
    """Whether examples per optimizer step differ from train.batch_size somewhere: gradient
    accumulation, or several processes per trial."""
    accumulating = "gradient_accumulation_steps" in searched or config.train.gradient_accumulation_steps > 1
    return accumulating or config.resources.num_workers > 1


def trial_label(trial) -> str:
    marks = [WINNER_MARK] * trial.winner + [TIED_MARK] * trial.tied + ["baseline"] * trial.baseline
    return " ".join([trial.trial_id, *marks])


def trials_title(summary: RunSummary) -> str:
    better = "higher" if summary.config.search.mode == "max" else "lower"
    tied = f", {TIED_MARK} within dev-set noise of the best" if summary.baseline and summary.baseline.tied else ""
    return f"Trials: best and last {summary.metric_key} ({better} is better), winner {WINNER_MARK}{tied}"


def baseline_lines(summary: RunSummary) -> list[str]:
    """The search's best against the baseline trial (the config's own values), with the verdict."""
    comparison = summary.baseline
    if comparison is None:
        return []
    metric, base = comparison.metric, comparison.baseline
    if base is None or base["trial_id"] == comparison.winner["trial_id"]:
        lines = [f"against the baseline: {comparison.verdict}"]
    else:
        noise = ""
        if comparison.interval is not None:
            low, high = comparison.interval
            noise = f" (95% interval {low:+.4f} to {high:+.4f} over {comparison.examples} dev examples)"
        lines = [
            f"against the baseline (trial {base['trial_id']}, the config's own values, epoch {base['epoch']} "
            f"{metric}={base['score']:.4f}): the best is {comparison.difference:+.4f}{noise}: {comparison.verdict}"
        ]
    if comparison.tied:
        lines.append(f"within dev-set noise of the best: trial {', '.join(comparison.tied)}")
    return lines


def models_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    """A model search (search.space.model): per model, its best trial and what its trials cost."""
    unit = unit_column(summary)
    headers = ["model", "trials", "trial-epochs", "best", "best trial", unit, "name_or_path"]
    models = summary.per_model()
    short = model_labels([model.model for model in models])
    rows = [
        [
            short[model.model] + (f" {WINNER_MARK}" if model.winner else ""),
            str(model.trials),
            str(model.trial_epochs),
            format_value(model.best_metric),
            model.best_trial or "",
            f"{model.device_seconds:.0f}",
            model.model,
        ]
        for model in models
    ]
    return headers, rows


def models_title(summary: RunSummary) -> str:
    return f"Models: each model's best {summary.metric_key} and its trials' cost, the winner's model {WINNER_MARK}"


def pareto_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    """search.objectives: the Pareto front, one row per member at its best epoch, best on the metric first."""
    (metric, _), (cost, _) = summary.config.objectives
    headers = ["trial", *summary.searched, "epoch", metric, cost, "checkpoint"]
    rows = [
        [
            member["trial_id"]
            + (f" {WINNER_MARK}" if summary.best and member["trial_id"] == summary.best.trial_id else ""),
            *(format_setting(member["config"], name) for name in summary.searched),
            str(member["epoch"]),
            format_value(member["values"][metric]),
            format_cost(cost, member["values"][cost]),
            "kept" if member["checkpoint"] and Path(member["checkpoint"]).is_dir() else "none",
        ]
        for member in summary.pareto_front
    ]
    return headers, rows


def format_cost(name: str, value) -> str:
    """A cost objective's value: parameters as a whole number, device-seconds to a tenth."""
    return f"{value:,.0f}" if name == "trainable_parameters" else f"{value:,.1f}"


def pareto_title(summary: RunSummary) -> str:
    (metric, mode), (cost, _) = summary.config.objectives
    better = "higher" if mode == "max" else "lower"
    return (
        f"Pareto front: the trials no other trial beats on both {metric} ({better} is better) and {cost} "
        f"(lower is better), each at its best epoch; {WINNER_MARK} best on {metric}"
    )


def pareto_lines(summary: RunSummary) -> list[str]:
    """The front in a sentence, and how to export one of its members."""
    front = summary.pareto_front
    if not summary.config.objectives or not front:
        return []
    scored = sum(trial.best_metric is not None for trial in summary.trials)
    members = ", ".join(member["trial_id"] for member in front)
    return [
        f"Pareto front: {len(front)} of {scored} scored trials ({members}), listed in best.json; "
        f"export one with: raytune-ft export {summary.run_dir} --out DIR --trial ID"
    ]


def history_rows(summary: RunSummary) -> tuple[list[str], list[list[list[str]]]]:
    """Per trial (in start order), one row per epoch; the best epoch of the search is marked."""
    main = summary.metric_key
    eval_keys = sorted({k for row in summary.rows for k in row if k.startswith("eval_")}, key=lambda k: (k != main, k))
    headers = ["trial", "epoch", *eval_keys, "train_loss", "lr at end", "samples/s", "epoch s"]
    best = summary.best
    groups = []
    for trial in summary.trials:
        group = []
        for row in trial.epochs:
            is_best = (
                best is not None and row["trial_id"] == best.trial_id and row["epoch"] == best.metrics.get("epoch")
            )
            group.append(
                [
                    row["trial_id"] + (f" {WINNER_MARK}" if is_best else ""),
                    str(row["epoch"]),
                    *(format_value(row.get(key)) for key in [*eval_keys, "train_loss", "last_learning_rate"]),
                    format_value(row.get("train_samples_per_second"), 1),
                    format_value(row.get("epoch_seconds"), 1),
                ]
            )
        if group:
            groups.append(group)
    return headers, groups


def confirm_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    """The confirm stage (confirm.json): one row per re-run config, in the search's order."""
    confirm = summary.confirm or {}
    searched = confirm.get("searched", summary.searched)
    headers = [
        "config",
        "search trial",
        *searched,
        "search best",
        "mean",
        "± std",
        "vs baseline",
        "seeds done",
        "per seed",
    ]
    rows = []
    for candidate in confirm.get("candidates", []):
        per_seed = ", ".join(
            f"{run['seed']}: {format_value(run['score']) if run['status'] == 'finished' else run['status']}"
            for run in candidate["runs"]
        )
        rows.append(
            [
                f"#{candidate['candidate'] + 1}"
                + (f" {WINNER_MARK}" if candidate.get("winner") else "")
                + (" baseline" if candidate.get("baseline") else ""),
                candidate["search"]["trial_id"],
                *(format_setting(candidate["config"], name) for name in searched),
                format_value(candidate["search"]["score"]),
                format_value(candidate["mean"]),
                format_value(candidate["std"]),
                against_baseline_cell(candidate.get("vs_baseline")),
                f"{len(candidate['scores'])}/{len(candidate['runs'])}",
                per_seed,
            ]
        )
    return headers, rows


def against_baseline_cell(compared: dict | None) -> str:
    """A candidate's mean paired difference to the baseline, with its 95% interval over the seeds."""
    if not compared:
        return ""
    if compared["interval"] is None:
        return f"{compared['mean_difference']:+.4f}"
    low, high = compared["interval"]
    return f"{compared['mean_difference']:+.4f} ({low:+.4f} to {high:+.4f})"


def confirm_title(summary: RunSummary) -> str:
    confirm = summary.confirm or {}
    return (
        f"Confirm: {candidates_words(confirm.get('candidates', []))} with new seeds, {confirm.get('metric')} "
        f"of each run's best epoch; winner {WINNER_MARK} by the mean"
    )


def kept_words(config) -> str:
    """What output.keep_checkpoints kept once the trials ended, and why."""
    keep = config.output.keep_checkpoints
    if keep == "all":
        kept = "each ended trial keeps its best epoch's model"
    elif keep == "best":
        kept = "the winner's best epoch, for export and the test split; output.keep_checkpoints: best"
    else:
        kept = f"the {keep} best trials' best epochs; output.keep_checkpoints: {keep}"
    return kept + "; a trial cut off keeps its latest for --resume"


def confirm_baseline_lines(confirm: dict, winner: dict) -> list[str]:
    """The confirmed winner against the baseline re-run with the same seeds."""
    if winner.get("baseline"):
        return ["against the baseline: the winner is the baseline (the config's own values) on new seeds"]
    compared = winner.get("vs_baseline")
    if not compared:
        return []
    return [
        f"against the baseline, seed by seed: {against_baseline_cell(compared)} over {compared['pairs']} seeds "
        f"(mean paired difference, 95% t interval): {compared['verdict']}"
    ]


def winner_lines(summary: RunSummary) -> list[str]:
    """How the winner was confirmed (confirm.json) and how it scores on test (test.json)."""
    lines = []
    confirm, test = summary.confirm, summary.test
    if confirm:
        seeds = ", ".join(map(str, confirm["seeds"]))
        head = f"confirm: {candidates_words(confirm['candidates'])} x {len(confirm['seeds'])} new seeds ({seeds})"
        if confirm.get("winner") is None:
            lines.append(f"{head}: no config finished its runs; best.json keeps the search's best trial")
        else:
            winner = confirm["candidates"][confirm["winner"]]
            std = f" ± {winner['std']:.4f}" if winner["std"] is not None else ""
            exported = confirm["exported"]
            lines.append(
                f"{head}: winner config #{winner['candidate'] + 1} (search trial {winner['search']['trial_id']}) "
                f"mean {confirm['metric']}={winner['mean']:.4f}{std} over {len(winner['scores'])} seeds; "
                f"exported model: trial {exported['trial_id']} (seed {exported['seed']}) epoch {exported['epoch']} "
                f"{confirm['metric']}={format_value(exported['score'])}"
            )
            if winner["candidate"] != 0:
                lines.append(
                    f"the search's best trial ({confirm['candidates'][0]['search']['trial_id']}) did not win on new seeds"
                )
            lines += confirm_baseline_lines(confirm, winner)
        unit = device_unit(confirm.get("device_type") or summary.device_type)
        lines.append(
            f"confirm compute: {confirm.get('device_seconds', 0):,.0f} {unit} (not in the search's compute above)"
        )
    if test:
        scores = ", ".join(f"{k}={format_value(v)}" for k, v in test["metrics"].items())
        lines.append(
            f"test (chosen on dev by {test['chosen_on']}, reported on test, evaluated once): {scores} "
            f"on {test['examples']} examples of {test['file']} (trial {test['trial_id']} epoch {test['epoch']})"
        )
    return lines


def summary_lines(summary: RunSummary) -> list[str]:
    """The search in a few sentences: status, best, cost, and what early stopping saved."""
    counts = ", ".join(f"{count} {status}" for status, count in summary.counts().items())
    status = "status unknown (no search.json)" if summary.status == "unknown" else summary.status
    lines = [f"search {status}: {len(summary.trials)} trials ({counts or 'none started'})"]
    best = summary.best
    if best:
        params = ", ".join(f"{k}={format_setting(best.config, k)}" for k in best.config) or "the fixed train values"
        label = "best of the search" if summary.confirm else "best"  # the confirm stage may pick another
        lines.append(
            f"{label}: trial {best.trial_id} epoch {best.metrics['epoch']} {summary.metric_key}={best.metrics[summary.metric_key]:.4f} with {params}"
        )
        lines += baseline_lines(summary)
    lines += pareto_lines(summary)
    unit = device_unit(summary.device_type)
    wall = f"; search wall time {summary.wall_seconds:.0f}s" if summary.wall_seconds is not None else ""
    lines.append(f"compute: {summary.device_seconds:,.0f} {unit} over {len(summary.trials)} trials{wall}")
    saved = summary.saved_device_seconds
    if saved > 0:
        share = saved / (saved + summary.device_seconds)
        lines.append(
            f"early stopping saved about {saved:,.0f} {unit} ({share:.0%} of running every stopped trial "
            f"to its planned epochs; {SAVINGS_METHOD})"
        )
    if not summary.config.output.keep_checkpoints:
        lines.append("checkpoints: none kept (output.keep_checkpoints: false; nothing to export or restart from)")
    elif summary.checkpoint_bytes is not None:
        lines.append(f"checkpoints: {summary.checkpoint_bytes / 1e6:,.1f} MB on disk ({kept_words(summary.config)})")
    for trial in summary.trials:
        if trial.error:
            lines.append(f"trial {trial.trial_id} failed: {trial.error}")
    return lines + winner_lines(summary)


def report_json(summary: RunSummary, files: dict | None = None) -> dict:
    unit = device_unit(summary.device_type)
    return {
        "run_dir": str(summary.run_dir.resolve()),
        "status": summary.status,
        "checkpoint_bytes": summary.checkpoint_bytes,
        "metric": summary.metric_key,
        "mode": summary.config.search.mode,
        "searched": summary.searched,
        "best": summary.best.to_json() if summary.best else None,
        "objectives": [{"name": key, "mode": mode} for key, mode in summary.config.objectives] or None,
        "pareto_front": summary.pareto_front if summary.config.objectives else None,
        "against_baseline": summary.baseline.to_json() if summary.baseline else None,
        "trials": [trial.to_json() for trial in summary.trials],
        "models": [model.to_json() for model in summary.per_model()] if "model" in summary.searched else None,
        "cost": {
            "device_type": summary.device_type,
            "unit": unit,
            "device_seconds": summary.device_seconds,
            "saved_device_seconds_estimate": summary.saved_device_seconds,
            "search_wall_seconds": summary.wall_seconds,
        },
        "epochs": summary.rows,
        "confirm": summary.confirm,
        "test": summary.test,
        "files": files or {},
    }


# ---------------------------------------------------------------------------------------
# Terminal


def make_console(stderr: bool = False) -> Console:
    """A console that does not hard-wrap tables and progress lines at 80 columns in CI logs."""
    console = Console(soft_wrap=True, stderr=stderr)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=160, stderr=stderr)
    return console


def _rich_table(title: str, headers: list[str], groups: list[list[list[str]]]) -> Table:
    table = Table(title=title)
    for index, name in enumerate(headers):
        table.add_column(name, justify="left" if index == 0 or name == "status" else "right", no_wrap=index == 0)
    for group in groups:
        for cells in group:
            table.add_row(*cells, style="bold green" if WINNER_MARK in cells[0] else None)
        table.add_section()
    return table


def print_summary(summary: RunSummary, console: Console, history: bool = False) -> None:
    headers, rows = trials_rows(summary)
    console.print(_rich_table(trials_title(summary), headers, [rows]))
    if summary.pareto_front:
        headers, rows = pareto_rows(summary)
        console.print(_rich_table(pareto_title(summary), headers, [rows]))
    if "model" in summary.searched:
        headers, rows = models_rows(summary)
        console.print(_rich_table(models_title(summary), headers, [rows]))
    if summary.confirm:
        headers, rows = confirm_rows(summary)
        console.print(_rich_table(confirm_title(summary), headers, [rows]))
    if history:
        headers, groups = history_rows(summary)
        console.print(_rich_table(f"Per-epoch history (best epoch {WINNER_MARK})", headers, groups))
    for line in summary_lines(summary):
        console.print(line, highlight=False)


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, default=str)
