"""The run folder's files, read and written in one place: per-epoch rows, trial events,
search state, and the best trial.

`epochs.jsonl` is the source of truth for metrics: one JSON object per trial per epoch,
appended as epochs finish, so an interrupted search loses nothing that was reported.
`trials.jsonl` is the same for trial lifetimes (started, finished, stopped early, failed,
interrupted), and `search.json` says whether the search is still running: together they
let `report` tell every trial's status from the run folder alone. After the search,
`confirm.json` (optional confirm stage), `best.json` (the winner) and `test.json` (the
winner on the test split, optional) say how the winner was chosen and how it scores.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from raytune_ft.errors import ConfigError

EPOCHS_FILE = "epochs.jsonl"
TRIALS_FILE = "trials.jsonl"
SEARCH_FILE = "search.json"
BEST_FILE = "best.json"
CONFIG_FILE = "config.yaml"
CONFIRM_FILE = "confirm.json"  # the confirm stage's table (tuning/confirm.py)
TEST_FILE = "test.json"  # the winner's test-split metrics (tuning/holdout.py)
# Each trial's dev-set predictions and labels per epoch, for comparing trials example by example
# (report/baseline.py); the loop reports them under DEV_PREDICTIONS, kept out of epochs.jsonl.
PREDICTIONS_FILE = "predictions.jsonl"
DEV_PREDICTIONS = "dev_predictions"


class RunFolderLock:
    """One process writes a run folder at a time: an exclusive lock (flock) on a file named after
    the folder, in this machine's temporary directory, so that a refused search leaves nothing in
    output.dir. The kernel drops the lock when the process ends, however it ends."""

    def __init__(self, run_dir: Path):
        digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:24]
        self.path = Path(tempfile.gettempdir()) / "raytune-ft-locks" / f"{digest}.lock"
        self.handle = None
        self.holder: str | None = None  # the pid that holds it, when acquire() failed

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            self.holder = handle.read().strip() or "unknown"
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def claim_new_run_dir(output_dir: str, name: str | None, default_name: str) -> tuple[Path, RunFolderLock]:
    """A new run folder for this process alone, locked (release the lock when done). A name the
    config gives is refused while another process writes it; a default name (<default_name>-
    <timestamp>) taken by another search started the same second gets -2, -3, ..."""
    if name is not None:
        run_dir = new_run_dir(output_dir, name, default_name)  # refuses a folder that holds a run
        lock = RunFolderLock(run_dir)
        if not lock.acquire():
            raise ConfigError(
                f"output: run folder {run_dir} is being written by process {lock.holder}; "
                "wait for that search to end, or choose another output.name"
            )
        return run_dir, lock
    stamp = default_run_name(default_name)
    for attempt in range(1, 1000):
        run_dir = new_run_dir(output_dir, stamp if attempt == 1 else f"{stamp}-{attempt}", default_name, check=False)
        lock = RunFolderLock(run_dir)
        if not run_dir.exists() and lock.acquire():
            return run_dir, lock
    raise ConfigError(f"output: no free run folder name under {output_dir} for {stamp}; set output.name")


def claim_run_dir(run_dir: Path) -> RunFolderLock:
    """The lock of an existing run folder (--resume), or one line naming the process that holds it."""
    lock = RunFolderLock(run_dir)
    if not lock.acquire():
        raise ConfigError(
            f"--resume {run_dir}: process {lock.holder} is writing this run folder; wait for it or stop it"
        )
    return lock


def default_run_name(default_name: str) -> str:
    return f"{default_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(output_dir: str, name: str | None, default_name: str, check: bool = True) -> Path:
    """A new run folder's path: <output.dir>/<output.name>, or <default_name>-<timestamp>.
    Refused when it already holds something (a finished run is never written over); check=False
    for the processes of a run whose main process checks (accelerate launch)."""
    run_dir = (Path(output_dir).expanduser() / (name or default_run_name(default_name))).resolve()
    if check and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"output: run folder {run_dir} already exists; choose another output.name or remove it")
    return run_dir


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash while it was written; the rest is good
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("ab+") as handle:  # append mode: every write goes to the end
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")  # a line cut short by a kill: the new row starts a line of its own
        handle.write((json.dumps(row) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_epochs(run_dir: Path) -> list[dict]:
    """One row per trial and epoch, in report order. A trial restarted from a checkpoint says
    that checkpoint's epoch again (see training/loop.py): the rows of one epoch merge."""
    rows: dict[tuple, dict] = {}
    for row in read_reported_epochs(run_dir):
        key = (row.get("trial_id"), row.get("epoch"))
        rows[key] = {**rows.pop(key, {}), **row}
    return list(rows.values())


def read_reported_epochs(run_dir: Path) -> list[dict]:
    """Every row as it was reported, an epoch that a restart ran again included."""
    return _read_jsonl(Path(run_dir) / EPOCHS_FILE)


def append_epoch(run_dir: Path, row: dict) -> None:
    _append_jsonl(Path(run_dir) / EPOCHS_FILE, row)


def append_predictions(run_dir: Path, trial_id: str, epoch: int, examples: dict) -> None:
    _append_jsonl(Path(run_dir) / PREDICTIONS_FILE, {"trial_id": trial_id, "epoch": epoch, **examples})


def read_predictions(run_dir: Path, wanted: set[tuple[str, int]] | None = None) -> dict[tuple[str, int], dict]:
    """{(trial_id, epoch): {"predictions": [...], "labels": [...]}} (only the wanted ones, if
    given: each row holds a list per dev example); an epoch trained again: its last row."""
    path, found = Path(run_dir) / PREDICTIONS_FILE, {}
    if not path.is_file():
        return found
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            # Rows start {"trial_id": ..., "epoch": ...}: which one it is, before parsing the lists.
            head = line[: line.find(', "predictions"')] + "}"
            try:
                key = (json.loads(head)["trial_id"], json.loads(head)["epoch"])
                if wanted is None or key in wanted:
                    found[key] = json.loads(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash while it was written
    return found


def read_trial_events(run_dir: Path) -> list[dict]:
    return _read_jsonl(Path(run_dir) / TRIALS_FILE)


def last_trial_events(run_dir: Path) -> dict[str, str]:
    """Each trial's latest event (started, finished, stopped early, failed, interrupted)."""
    return {event["trial_id"]: event["event"] for event in read_trial_events(run_dir)}


def ended_trials(run_dir: Path) -> dict[str, dict]:
    """The trials trials.jsonl records as run to their end or stopped by the scheduler, each
    with its last epoch's row: what a resumed search must not train again."""
    rows = {}
    for row in read_epochs(run_dir):
        if row["epoch"] >= rows.get(row["trial_id"], {}).get("epoch", 0):
            rows[row["trial_id"]] = row
    ended = (trial for trial, event in last_trial_events(run_dir).items() if event in ("finished", "stopped early"))
    return {trial: rows[trial] for trial in ended if trial in rows}


def replace_epoch(run_dir: Path, row: dict) -> None:
    """epochs.jsonl with `row` merged into the row of the same trial and epoch (an epoch trained
    again after a restart): one row per trial and epoch, rewritten whole (a rename: never half)."""
    path = Path(run_dir) / EPOCHS_FILE
    key = (row["trial_id"], row["epoch"])
    rows = [{**old, **row} if (old.get("trial_id"), old.get("epoch")) == key else old for old in _read_jsonl(path)]
    write_text_atomically(path, "".join(json.dumps(each) + "\n" for each in rows))


def any_trial_cut_off(run_dir: Path) -> bool:
    """Whether some trial's last event says interrupted (Ctrl-C, a killed search): `--resume` runs it on."""
    return "interrupted" in last_trial_events(run_dir).values()


def append_trial_event(run_dir: Path, event: dict) -> None:
    _append_jsonl(Path(run_dir) / TRIALS_FILE, event)


# A running search writes heartbeat_at into search.json every HEARTBEAT_EVERY seconds. Read on
# another machine (a run folder on shared storage, whose search's pid cannot be checked from
# there), a search silent for HEARTBEAT_STALE seconds is taken as interrupted: its machine was lost.
HEARTBEAT_EVERY = 30.0
HEARTBEAT_STALE = 300.0


def read_search_state(run_dir: Path) -> dict:
    return read_json(run_dir, SEARCH_FILE) or {}


def read_json(run_dir: Path, name: str) -> dict | None:
    """One of the run folder's JSON files (search.json, best.json, confirm.json, test.json), or
    None where it is not there. A damaged one is bad input: one line that names it."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{path}: damaged, not a JSON document ({err}); restore it from a backup or remove it"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: damaged, a JSON {type(document).__name__} instead of an object; restore or remove it"
        )
    return document


def write_search_state(run_dir: Path, state: dict) -> None:
    write_json_atomically(Path(run_dir) / SEARCH_FILE, state)


def write_json_atomically(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """Written beside it, then renamed into place: a reader sees the old file or the new one, never half."""
    staging = path.with_name(path.name + ".writing")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


@dataclass
class Best:
    trial_id: str
    config: dict  # the trial's hyperparameters
    metrics: dict  # the best epoch's row
    checkpoint: str | None
    # With a confirm stage: the winning config's mean over its new seeds (see tuning/confirm.py).
    confirmed: dict | None = None
    # The search's best against the baseline trial, the config's own values (report/baseline.py).
    against_baseline: dict | None = None
    # search.objectives: the trials no other beats on both goals, each at its best epoch (report/pareto.py).
    pareto_front: list[dict] | None = None

    @classmethod
    def from_row(cls, row: dict, searched: list[str]) -> Best:
        """The trial of an epoch row, at that epoch: its searched values, its metrics, its checkpoint."""
        return cls(
            trial_id=row["trial_id"],
            config={name: row[name] for name in searched if name in row},
            metrics={k: v for k, v in row.items() if k != "checkpoint_path"},
            checkpoint=row.get("checkpoint_path"),
        )

    def to_json(self) -> dict:
        document = {
            "trial_id": self.trial_id,
            "config": self.config,
            "metrics": self.metrics,
            "checkpoint": self.checkpoint,
        }
        if self.confirmed is not None:
            document["confirmed"] = self.confirmed
        if self.against_baseline is not None:
            document["against_baseline"] = self.against_baseline
        if self.pareto_front is not None:
            document["pareto_front"] = self.pareto_front
        return document


def best_epoch(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The single best reported epoch over all trials (ties: the earliest reported)."""
    key = f"eval_{metric}"
    scored = [row for row in rows if isinstance(row.get(key), (int, float))]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda row: row[key])


def find_best(rows: list[dict], metric: str, mode: str, searched: list[str]) -> Best | None:
    row = best_epoch(rows, metric, mode)
    return Best.from_row(row, searched) if row is not None else None


def write_best(run_dir: Path, best: Best) -> Path:
    path = Path(run_dir) / BEST_FILE
    write_json_atomically(path, best.to_json())
    return path
