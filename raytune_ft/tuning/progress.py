"""What a user sees while `search` runs.

One line per trial event (started, each epoch, ended): it reads the same in a terminal and
in a CI log. In a terminal a live footer sits below those lines: one bar per running trial
(epochs done of planned) and a status line (running, finished, stopped early, failed, best
so far). Without a terminal the status line is printed after each trial ends instead.
`quiet` keeps only failures.

It is fed the exact records the search writes to the run folder (see run_log.RunFolderLog),
so what it shows and what `report` later reads cannot disagree.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from raytune_ft.report.tables import format_setting, format_value, make_console


class SearchProgress:
    def __init__(self, console: Console, metric: str, mode: str, num_samples: int, quiet: bool = False):
        self.console, self.metric_key, self.mode = console, f"eval_{metric}", mode
        self.num_samples, self.quiet = num_samples, quiet
        self.running: set[str] = set()
        self.ended: dict[str, int] = {"finished": 0, "stopped early": 0, "failed": 0, "interrupted": 0}
        self.best: tuple[float, str] | None = None  # (score, trial id)
        self.live: Progress | None = None  # the footer, only in a terminal
        self.overall: int | None = None  # its "trials" bar
        self.bars: dict[str, int] = {}  # its bar per running trial

    # The Tuner pickles its callbacks (and so this) for restore; a Console holds a lock.
    def __getstate__(self):
        return {**self.__dict__, "console": None, "live": None, "bars": {}}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.console = make_console()

    def start(self) -> None:
        if self.console.is_terminal and not self.quiet and self.live is None:
            self.live = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=self.console,
                transient=True,  # the footer goes away; the summary follows
            )
            self.overall = self.live.add_task("trials", total=self.num_samples, note=self._counts())
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # ----- the run folder's records, as they are written

    def trial_started(self, event: dict) -> None:
        trial_id = event["trial_id"]
        self.running.add(trial_id)
        params = ", ".join(f"{k}={format_setting(event['config'], k)}" for k in event["config"])
        self._say(f"[cyan]trial {trial_id}[/] started: {params or 'fixed train values'}")
        if self.live is not None:
            self.bars[trial_id] = self.live.add_task(f"  {trial_id}", total=event["planned_epochs"], note="epochs")
        self._refresh()

    def epoch_reported(self, row: dict) -> None:
        score = row.get(self.metric_key)
        if isinstance(score, (int, float)) and (
            self.best is None or (score > self.best[0] if self.mode == "max" else score < self.best[0])
        ):
            self.best = (score, row["trial_id"])
        self._say(
            f"[cyan]trial {row['trial_id']}[/] epoch {row['epoch']}: {self.metric_key}={format_value(score)} "
            f"eval_loss={format_value(row.get('eval_loss'))} ({row.get('epoch_seconds', 0):.0f}s, "
            f"{row.get('train_samples_per_second', 0):.0f} samples/s)"
        )
        if row["trial_id"] in self.bars:
            self.live.update(
                self.bars[row["trial_id"]],
                completed=row["epoch"],
                note=f"epochs, last {self.metric_key}={format_value(score)}",
            )
        self._refresh()

    def trial_ended(self, event: dict) -> None:
        trial_id, status = event["trial_id"], event["event"]
        self.running.discard(trial_id)
        self.ended[status] = self.ended.get(status, 0) + 1
        if status == "failed":
            self.console.print(f"[red]trial {trial_id} failed[/]: {event.get('error', 'unknown error')}")
        else:
            epochs = event["epochs_done"]
            self._say(
                f"[cyan]trial {trial_id}[/] {status} after {epochs} epoch{'' if epochs == 1 else 's'} ({event['wall_seconds']:.0f}s)"
            )
        if trial_id in self.bars:
            self.live.remove_task(self.bars.pop(trial_id))
        self._refresh()
        if self.live is None and not self.quiet and status != "interrupted":
            self.console.print(f"  {self.status_line()}")

    # -----

    def status_line(self) -> str:
        return f"{sum(self.ended.values())}/{self.num_samples} trials done · {self._counts()}"

    def _counts(self) -> str:
        parts = [f"{count} {status}" for status, count in self.ended.items() if count]
        parts.append(f"{len(self.running)} running")
        if self.best:
            parts.append(f"best {self.metric_key}={self.best[0]:.4f} (trial {self.best[1]})")
        return " · ".join(parts)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.overall, note=self._counts(), completed=sum(self.ended.values()))

    def _say(self, line: str) -> None:
        if not self.quiet:
            self.console.print(line)
