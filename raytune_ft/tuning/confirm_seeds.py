"""confirm.seeds: auto: more seeds where the answer is not clear yet, fewer where it is.

The confirm stage's runs are handed out by this Ray Tune searcher instead of a fixed grid: first
every candidate (the baseline among them) with FIRST_SEEDS new seeds; then, while the leader (the
best mean among candidates whose runs all finished) is not separated from every other complete
candidate, one more seed for the leader and for each candidate it is not separated from, up to
confirm.max_seeds. Separated: the 95% t interval of the per-seed differences (the leader minus the
candidate, trained with the same seeds) lies wholly on the leader's side. A candidate with a failed
run is out of the race (it ranks below complete ones anyway).
"""

from __future__ import annotations

import pickle
import statistics

from ray.tune.search import Searcher

from raytune_ft.report.baseline import paired_seed_interval

FIRST_SEEDS = 3


class AddSeedsUntilSeparated(Searcher):
    def __init__(self, configs: list[dict], seeds: list[int], metric: str, mode: str):
        # Its own metric and mode: Tune hands them only to searchers of a non-empty param space.
        super().__init__(metric=metric, mode=mode)
        self.configs, self.seeds = configs, seeds  # seeds: up to confirm.max_seeds, in order
        self.given = min(FIRST_SEEDS, len(seeds))  # seeds handed out so far
        self.queue = [(candidate, seed) for candidate in range(len(configs)) for seed in seeds[: self.given]]
        self.running: dict[str, tuple[int, int]] = {}
        self.best: dict[str, float] = {}  # a running trial's best epoch so far
        self.scores: dict[tuple[int, int], float | None] = {}  # (candidate, seed) -> best epoch; None: failed

    def suggest(self, trial_id: str):
        if not self.queue and not self.running:
            self.queue = self.next_round()
            if not self.queue:
                return Searcher.FINISHED
        if not self.queue:
            return None  # a round's last runs are still training: decide once they end
        candidate, seed = self.queue.pop(0)
        self.running[trial_id] = (candidate, seed)
        return {"candidate": candidate, "seed": seed, **self.configs[candidate]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        score = result.get(self.metric)
        if trial_id in self.running and isinstance(score, (int, float)):
            best = self.best.get(trial_id)
            self.best[trial_id] = score if best is None else (max if self.mode == "max" else min)(best, score)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self.on_trial_result(trial_id, result)
        key = self.running.pop(trial_id, None)
        if key is not None:
            best = self.best.pop(trial_id, None)
            self.scores[key] = None if error else best

    def next_round(self) -> list[tuple[int, int]]:
        """One more seed for the leader and every candidate it is not separated from; [] when done."""
        if self.given >= len(self.seeds):
            return []
        given = self.seeds[: self.given]
        # Still in the race: every seed handed out so far run, none failed.
        runs = {c: [self.scores.get((c, s)) for s in given if (c, s) in self.scores] for c in range(len(self.configs))}
        racing = [c for c, scores in runs.items() if len(scores) == len(given) and None not in scores]
        if len(racing) < 2:
            return []
        sign = 1 if self.mode == "max" else -1
        leader = max(racing, key=lambda c: (sign * statistics.fmean(runs[c]), -c))
        contenders = [c for c in racing if c != leader and not self.separated(runs[leader], runs[c], sign)]
        if not contenders:
            return []
        seed = self.seeds[self.given]
        self.given += 1
        return [(candidate, seed) for candidate in [leader, *contenders]]

    @staticmethod
    def separated(leader: list[float], other: list[float], sign: int) -> bool:
        _, interval = paired_seed_interval([sign * (a - b) for a, b in zip(leader, other)])
        return interval is not None and interval[0] > 0

    # Tune saves the searcher with the stage's state, so that --resume goes on with the same runs.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
