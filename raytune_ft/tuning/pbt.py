"""Population Based Training.

PBT (Ray Tune's PopulationBasedTraining) trains a population of trials and, every
`search.perturbation_interval` epochs, restarts the weakest ones from a copy of the strongest
ones' checkpoints with perturbed learning_rate / warmup_ratio (exploit, then explore).

It takes a trial's checkpoint from what the trial last reported to Ray Tune. A one-worker
trial trains in its Tune trial's own process (training/trial.py) and reports each epoch with its
checkpoint straight to Tune (training/reporters.TuneReporter); restarted, it goes on from
tune.get_checkpoint(), its own or its donor's. A trial with several workers needs its driver
to relay its epochs to Tune: training/pbt_relay.py.
"""

from __future__ import annotations

from raytune_ft.config import PBT_MUTATIONS, Config
from raytune_ft.tuning.leader import LeaderKeepingPBT, SearchLeader


def build_pbt_scheduler(
    config: Config, param_space: dict, metric: str, mode: str, leader: SearchLeader
) -> LeaderKeepingPBT:
    mutations, bounds = {}, {}
    for key in PBT_MUTATIONS:
        if key not in config.search.space:
            continue
        sampler, args = next(iter(config.search.space[key].items()))
        if sampler == "choice":
            mutations[key] = args  # PBT moves to a neighbouring value of the list
        else:
            # PBT multiplies by 0.8 or 1.2 (or resamples): clipped back into the range below.
            mutations[key], bounds[key] = param_space[key], args

    def keep_inside_space(new_config: dict) -> dict:
        for key, (low, high) in bounds.items():
            new_config[key] = min(max(new_config[key], low), high)
        return new_config

    return LeaderKeepingPBT(
        leader=leader,  # never overwritten by a clone
        metric=metric,  # which trials are strong: config.scheduler_metric
        mode=mode,
        time_attr="epoch",  # the trial's own epoch: a clone goes on at its donor's epoch + 1
        perturbation_interval=config.search.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=config.search.quantile_fraction,
        custom_explore_fn=keep_inside_space,
        synch=config.search.synch,
    )
