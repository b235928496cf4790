"""search.objectives: the Pareto front of a search of two goals, from its epoch rows alone.

Each trial is one point: its best epoch on the search metric (the first objective; ties: the
earliest epoch), with the metric and the cost of that epoch (config.COST_OBJECTIVES): the model
export would write, and what producing it cost. The searcher tells Optuna the same point
(tuning/searcher.py). One point dominates another when it is at least as good on both objectives
and better on one; the front is the points that no other point dominates, best on the metric
first. Two trials with the same values do not dominate each other: both are on the front.
"""

from __future__ import annotations

from raytune_ft.run_folder import Best


def trial_points(rows: list[dict], objectives: list[tuple[str, str]]) -> list[dict]:
    """One row per trial: its best epoch on the first objective, among its rows that hold a
    number for each objective; trials in the order they first reported."""
    (metric, mode), *_ = objectives
    by_trial: dict[str, list[dict]] = {}
    for row in rows:
        if all(isinstance(row.get(key), (int, float)) for key, _ in objectives):
            by_trial.setdefault(row["trial_id"], []).append(row)
    pick = max if mode == "max" else min
    # max and min keep the first of equal rows: in epoch order, the earliest.
    return [
        pick(sorted(trial, key=lambda row: row["epoch"]), key=lambda row: row[metric]) for trial in by_trial.values()
    ]


def dominates(a: dict, b: dict, objectives: list[tuple[str, str]]) -> bool:
    """Whether point a is at least as good as b on every objective and better on one."""
    better = [a[key] > b[key] if mode == "max" else a[key] < b[key] for key, mode in objectives]
    worse = [a[key] < b[key] if mode == "max" else a[key] > b[key] for key, mode in objectives]
    return any(better) and not any(worse)


def pareto_front(points: list[dict], objectives: list[tuple[str, str]]) -> list[dict]:
    """The points no other point dominates, best on the first objective first (then the second)."""
    front = [point for point in points if not any(dominates(other, point, objectives) for other in points)]
    signs = [-1 if mode == "max" else 1 for _, mode in objectives]
    return sorted(front, key=lambda point: [sign * point[key] for sign, (key, _) in zip(signs, objectives)])


def front_members(front: list[dict], objectives: list[tuple[str, str]], searched: list[str]) -> list[dict]:
    """best.json's pareto_front: each member's trial, epoch, values, objective values and checkpoint."""
    return [
        {
            "trial_id": row["trial_id"],
            "epoch": row["epoch"],
            "config": {name: row[name] for name in searched if name in row},
            "values": {key: row[key] for key, _ in objectives},
            "checkpoint": row.get("checkpoint_path"),
        }
        for row in front
    ]


def best_on_front(rows: list[dict], objectives: list[tuple[str, str]], searched: list[str]) -> Best | None:
    """The winner of a search of two goals: the front's member best on the first objective (the
    search's best on the metric; of equal ones the cheapest), with the whole front beside it."""
    front = pareto_front(trial_points(rows, objectives), objectives)
    if not front:
        return None
    best = Best.from_row(front[0], searched)
    best.pareto_front = front_members(front, objectives, searched)
    return best
