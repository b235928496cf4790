"""The report's plots, as PNG files: what happened in a search and why the winner won.

- curves.png: every trial's eval metric and eval loss per epoch, the winner highlighted;
- best_so_far.png: the best metric found so far against the compute spent to find it
  (trial-epochs, and device-seconds);
- hyperparameters.png: each searched hyperparameter against the trial's final metric
  (log axis for log-uniform samplers such as the learning rate);
- models.png (a model search): each model's best metric and what its trials cost;
- pareto.png (search.objectives): each trial's metric against its cost at its best epoch, the
  Pareto front highlighted and joined.

Matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from raytune_ft.report.pareto import trial_points
from raytune_ft.report.summary import RunSummary, TrialSummary, device_unit, model_labels

PLOTS_DIR = "plots"
WINNER_COLOR = "#d62728"
OTHER_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]
STATUS_MARKERS = {"finished": "o", "stopped early": "X", "failed": "s", "interrupted": "D", "running": ">"}


def write_plots(summary: RunSummary, out_dir: Path | None = None) -> list[tuple[Path, str]]:
    """Writes the plots that the run's data supports; returns (path, caption) pairs."""
    out_dir = Path(out_dir or summary.run_dir / PLOTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not summary.rows:
        return []
    written = [
        (
            _save(curves_figure(summary), out_dir / "curves.png"),
            f"Per-epoch eval_{summary.config.metric} and eval_loss of every trial; the winner in red.",
        ),
        (
            _save(best_so_far_figure(summary), out_dir / "best_so_far.png"),
            f"Best eval_{summary.config.metric} found so far against the compute spent: trial-epochs and {device_unit(summary.device_type)}.",
        ),
    ]
    if summary.searched:
        written.append(
            (
                _save(hyperparameters_figure(summary), out_dir / "hyperparameters.png"),
                f"Each searched hyperparameter against the trial's final eval_{summary.config.metric}.",
            )
        )
    if "model" in summary.searched:
        written.append(
            (
                _save(models_figure(summary), out_dir / "models.png"),
                f"Each model's best eval_{summary.config.metric} and its trials' compute; the winner's model in red.",
            )
        )
    if summary.pareto_front:
        (metric, _), (cost, _) = summary.config.objectives
        written.append(
            (
                _save(pareto_figure(summary), out_dir / "pareto.png"),
                f"Each trial's {metric} against its {cost} at its best epoch; the Pareto front in red, the winner starred.",
            )
        )
    return written


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def _color(index: int, trial: TrialSummary) -> str:
    return WINNER_COLOR if trial.winner else OTHER_COLORS[index % len(OTHER_COLORS)]


def _status_legend(trials: list[TrialSummary]) -> list[Line2D]:
    statuses = sorted({trial.status for trial in trials}, key=list(STATUS_MARKERS).index)
    handles = [Line2D([], [], color="#555555", marker=STATUS_MARKERS[s], linestyle="", label=s) for s in statuses]
    return [Line2D([], [], color=WINNER_COLOR, linewidth=3, label="winner"), *handles]


def curves_figure(summary: RunSummary) -> Figure:
    metric = summary.metric_key
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, key in zip(axes, (metric, "eval_loss")):
        for index, trial in enumerate(summary.trials):
            points = [(row["epoch"], row[key]) for row in trial.epochs if isinstance(row.get(key), (int, float))]
            if not points:
                continue
            epochs, values = zip(*points)
            ax.plot(
                epochs,
                values,
                color=_color(index, trial),
                linewidth=3 if trial.winner else 1.3,
                alpha=1 if trial.winner else 0.75,
                zorder=3 if trial.winner else 2,
                marker=".",
                label=f"{trial.trial_id} (winner)" if trial.winner else trial.trial_id,
            )
            # The last point says how the trial ended (stopped early, finished, ...).
            ax.plot(
                epochs[-1],
                values[-1],
                marker=STATUS_MARKERS.get(trial.status, "o"),
                color=_color(index, trial),
                markersize=9 if trial.winner else 7,
                linestyle="",
                zorder=4,
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{metric} per epoch ({summary.config.search.mode} is better)")
    axes[1].set_title("eval_loss per epoch (lower is better)")
    axes[0].legend(handles=_status_legend(summary.trials), fontsize=8, loc="best")
    if len(summary.trials) <= len(OTHER_COLORS):  # beyond that colours repeat and names would not help
        axes[1].legend(title="trial", fontsize=8, loc="best")
    figure.suptitle(f"{summary.run_dir.name}: {len(summary.trials)} trials")
    return figure


def best_so_far_figure(summary: RunSummary) -> Figure:
    points = summary.compute_curve()
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    unit = device_unit(summary.device_type)
    for ax, key, label in zip(axes, ("trial_epochs", "device_seconds"), ("trial-epochs completed", f"{unit} spent")):
        xs = [p[key] for p in points]
        scored = [(p[key], p["score"]) for p in points if p["score"] is not None]
        if scored:
            ax.scatter(*zip(*scored), color="#999999", s=18, label="each reported epoch", zorder=2)
        best = [(x, p["best"]) for x, p in zip(xs, points) if p["best"] is not None]
        if best:
            bx, by = zip(*best)
            ax.step(bx, by, where="post", color=WINNER_COLOR, linewidth=2.5, label="best so far", zorder=3)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(xs, default=1) * 1.04)  # from nothing spent: the start-up cost before the first result shows
        ax.grid(alpha=0.3)
        if key == "trial_epochs":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(summary.metric_key)
    axes[0].legend(fontsize=8, loc="best")
    total = f"{summary.device_seconds:,.0f} {unit} in all"
    figure.suptitle(f"Best {summary.metric_key} so far against compute ({len(points)} trial-epochs, {total})")
    return figure


def hyperparameters_figure(summary: RunSummary) -> Figure:
    names = summary.searched
    figure = Figure(figsize=(max(4.5 * len(names), 6), 4.2), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    space = summary.config.search.space
    for ax, name in zip(axes, names):
        # A choice with null in it (max_grad_norm: [null, 1.0]) or the model has no numeric axis: one category per value.
        categories = _categories(name, space.get(name, {}))
        if categories:
            ax.xaxis.update_units(list(categories.values()))  # in the order the config lists them
        for trial in summary.trials:
            if trial.last_metric is None or name not in trial.config:
                continue
            x = categories.get(trial.config[name], str(trial.config[name])) if categories else trial.config[name]
            ax.scatter(
                x,
                trial.last_metric,
                marker="*" if trial.winner else STATUS_MARKERS.get(trial.status, "o"),
                s=260 if trial.winner else 55,
                color=WINNER_COLOR if trial.winner else "#1f77b4",
                edgecolors="black" if trial.winner else "none",
                alpha=1 if trial.winner else 0.8,
                zorder=3 if trial.winner else 2,
            )
        _space_axis(ax, space.get(name, {}))
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"final {summary.metric_key}")
    legend = [
        Line2D(
            [], [], color=WINNER_COLOR, marker="*", markersize=14, markeredgecolor="black", linestyle="", label="winner"
        )
    ]
    legend += [h for h in _status_legend(summary.trials)[1:]]
    axes[0].legend(handles=legend, fontsize=8, loc="best")
    # Two lines: on one, a figure with one searched key is narrower than its title.
    figure.suptitle(f"Searched hyperparameters against the final {summary.metric_key}\n(the last epoch each trial ran)")
    return figure


def _categories(name: str, spec: dict) -> dict | None:
    """{value: its category label} for the model (its short name) or a choice list that holds null, else None."""
    ((sampler, args),) = spec.items() if spec else (("choice", []),)
    if name == "model":
        return model_labels(args)
    if sampler != "choice" or None not in args:
        return None
    return {value: "null" if value is None else str(value) for value in args}


def models_figure(summary: RunSummary) -> Figure:
    """Per model (search.space.model): its best score, and what its trials cost in trial-epochs and device-seconds."""
    models = summary.per_model()
    short = model_labels([model.model for model in models])
    labels = [short[model.model] for model in models]
    colors = [WINNER_COLOR if model.winner else OTHER_COLORS[0] for model in models]
    unit = device_unit(summary.device_type)
    figure = Figure(figsize=(max(11, 1.6 * len(models) * 3), 4.2), layout="constrained")
    axes = figure.subplots(1, 3)
    panels = (
        (f"best {summary.metric_key}", [model.best_metric or 0.0 for model in models]),
        ("trial-epochs", [model.trial_epochs for model in models]),
        (unit, [model.device_seconds for model in models]),
    )
    for ax, (title, values) in zip(axes, panels):
        ax.bar(labels, values, color=colors)
        ax.set_title(title)
        if title == "trial-epochs":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(axis="x", labelrotation=20 if len(models) > 3 else 0)
        ax.grid(alpha=0.3, axis="y")
    scores = [model.best_metric for model in models if model.best_metric is not None]
    if scores:  # the differences between models, not the distance from 0, are what matters
        low, high = min(scores), max(scores)
        pad = (high - low) * 0.5 or abs(high) * 0.05 or 0.05
        axes[0].set_ylim(low - pad, high + pad)
    figure.suptitle(
        f"Per model: the best {summary.metric_key} ({summary.config.search.mode} is better) and the compute spent"
    )
    return figure


def pareto_figure(summary: RunSummary) -> Figure:
    """search.objectives: every trial as one point (its best epoch's cost and metric), the front's
    members in red joined by the staircase of what the front attains, the winner starred."""
    objectives = summary.config.objectives
    (metric, mode), (cost, _) = objectives
    front = sorted(summary.pareto_front, key=lambda member: member["values"][cost])
    on_front = {member["trial_id"] for member in front}
    others = [row for row in trial_points(summary.rows, objectives) if row["trial_id"] not in on_front]
    figure = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = figure.subplots()
    if others:
        ax.scatter([r[cost] for r in others], [r[metric] for r in others], s=45, alpha=0.75, label="other trials")
    xs, ys = [m["values"][cost] for m in front], [m["values"][metric] for m in front]
    # Cheaper to the left: the best metric the front reaches for a cost runs on from each member
    # until the next one (a staircase, whether the metric is maximized or minimized).
    # (on to the dearest trial: what the front reaches for any cost)
    right = max([r[cost] for r in others] + xs)
    ax.step(xs + [right], ys + ys[-1:], where="post", color=WINNER_COLOR, linewidth=2, zorder=3, label="Pareto front")
    ax.scatter(xs, ys, color=WINNER_COLOR, s=60, zorder=4)
    names: dict[tuple, list[str]] = {}  # trials with the same values share a point and its label
    for member, x, y in zip(front, xs, ys):
        names.setdefault((x, y), []).append(member["trial_id"])
        if summary.best is not None and member["trial_id"] == summary.best.trial_id:
            ax.scatter(x, y, marker="*", s=300, color=WINNER_COLOR, edgecolors="black", zorder=5, label="winner")
    for (x, y), trial_ids in names.items():
        ax.annotate(", ".join(trial_ids), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    costs = [x for x in xs + [r[cost] for r in others] if x > 0]
    if costs and max(costs) / min(costs) > 20:  # parameter counts of LoRA ranks and full models
        ax.set_xscale("log")
    unit = f" ({device_unit(summary.device_type)}, epochs up to the best one)" if cost == "device_seconds" else ""
    ax.set_xlabel(f"{cost}{unit}, lower is better")
    ax.set_ylabel(f"{metric} at the best epoch, {'higher' if mode == 'max' else 'lower'} is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    figure.suptitle(
        f"Trade-off: {metric} against {cost}, {len(front)} of {len(front) + len(others)} trials on the front"
    )
    return figure


def _space_axis(ax, spec: dict) -> None:
    """The x axis spans the searched range, so the plot also shows where in it the trials fell."""
    ((sampler, args),) = spec.items() if spec else (("choice", []),)
    if sampler == "loguniform":
        ax.set_xscale("log")
        # Less than a decade would otherwise get crowded minor-tick labels.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}".replace("e-0", "e-")))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if sampler in ("loguniform", "uniform"):
        low, high = args
        pad = (high / low) ** 0.04 if sampler == "loguniform" else (high - low) * 0.04
        ax.set_xlim(low / pad, high * pad) if sampler == "loguniform" else ax.set_xlim(low - pad, high + pad)
    if sampler == "randint":
        ax.set_xlim(args[0] - 0.5, args[1] - 0.5)  # randint's upper bound is exclusive
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
