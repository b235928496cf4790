"""report.html: the report's tables, summary lines and plots in one self-contained file (the
plots are embedded), so it can be mailed or archived."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from raytune_ft.report.summary import RunSummary
from raytune_ft.report.tables import (
    WINNER_MARK,
    confirm_rows,
    confirm_title,
    history_rows,
    models_rows,
    models_title,
    pareto_rows,
    pareto_title,
    summary_lines,
    trials_rows,
    trials_title,
)

REPORT_FILE = "report.html"


def write_html(summary: RunSummary, plots: list[tuple[Path, str]], path: Path | None = None) -> Path:
    path = Path(path or summary.run_dir / REPORT_FILE)
    name = html.escape(summary.run_dir.name)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>raytune-ft report: {name}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>raytune-ft report: {name}</h1>",
        "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(summary)),
        f"<h2>{html.escape(trials_title(summary))}</h2>",
        _html_table(*trials_rows(summary)),
    ]
    if summary.pareto_front:
        parts += [f"<h2>{html.escape(pareto_title(summary))}</h2>", _html_table(*pareto_rows(summary))]
    if "model" in summary.searched:
        parts += [f"<h2>{html.escape(models_title(summary))}</h2>", _html_table(*models_rows(summary))]
    if summary.confirm:
        parts += [f"<h2>{html.escape(confirm_title(summary))}</h2>", _html_table(*confirm_rows(summary))]
    if plots:
        parts.append("<h2>Plots</h2>")
        for plot, caption in plots:
            data = base64.b64encode(Path(plot).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(Path(plot).name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)} ({html.escape(Path(plot).name)})</figcaption></figure>"
            )
    headers, groups = history_rows(summary)
    parts += ["<h2>Per-epoch history</h2>", _html_table(headers, [cells for group in groups for cells in group])]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(summary.config.to_yaml())}</pre>", "</body></html>"]
    staging = path.with_suffix(".html.writing")
    staging.write_text("\n".join(parts) + "\n", encoding="utf-8")
    staging.replace(path)
    return path


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=win' if WINNER_MARK in cells[0] else ''}>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + "</tr>"
        for cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}tr.win{background:#e8f5e9;font-weight:bold}"
    "img{max-width:100%}figure{margin:1.5em 0}figcaption{color:#555}pre{background:#f6f6f6;padding:1em}"
)


def write_report_files(summary: RunSummary) -> dict:
    """plots/*.png and report.html; returns their paths (for JSON and the CLI)."""
    from raytune_ft.report.plots import write_plots  # matplotlib only when files are wanted

    plots = write_plots(summary)
    report = write_html(summary, plots)
    return {"plots": [str(p) for p, _ in plots], "report": str(report)}
