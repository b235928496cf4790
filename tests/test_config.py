"""Config mistakes fail before Ray starts, as one line naming the field and the fix."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import error_of

from raytune_ft.cli import main
from raytune_ft.config import ConfigError, load_config, resume_overrides, validate_config
from raytune_ft.tasks import GLUE_TASKS

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"


def test_unknown_key_suggests_the_right_one():
    message = error_of({"train": {"learnig_rate": 1e-4}})
    assert "unknown key 'train.learnig_rate'" in message and "'train.learning_rate'" in message


def test_a_share_of_a_gpu_is_for_one_worker_trials_only():
    # Two ranks on one GPU: NCCL refuses duplicate GPUs, Accelerate asks rank 1 for cuda:1.
    message = error_of({"resources": {"num_workers": 2, "gpus_per_worker": 0.5}})
    assert "resources.gpus_per_worker: a share of a GPU" in message and "resources.num_workers: 1" in message
    assert "whole GPUs" in error_of({"resources": {"gpus_per_worker": 1.5}})
    validate_config({"resources": {"num_workers": 1, "gpus_per_worker": 0.25}})  # packed trials: fine
    validate_config({"resources": {"num_workers": 2, "gpus_per_worker": 1}})  # a GPU per rank: fine


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"train": {"learning_rate": -1e-5}}, "train.learning_rate"),
        ({"train": {"num_epochs": 0}}, "train.num_epochs"),
        ({"train": {"batch_size": "eight"}}, "train.batch_size"),
        ({"train": {"mixed_precision": "fp8"}}, "train.mixed_precision"),
        ({"search": {"scheduler": "hyperband"}}, "search.scheduler"),
        ({"search": {"space": {"learning_rate": {"loguniform": [1e-4, 1e-5]}}}}, "search.space.learning_rate"),
        ({"search": {"space": {"num_epochs": {"randint": [0, 3]}}}}, "search.space.num_epochs"),
        ({"search": {"space": {"dropout": {"uniform": [0, 0.5]}}}}, "search.space.dropout"),
        ({"search": {"metric": "matthews"}}, "search.metric"),
        ({"resources": {"num_workers": 0}}, "resources.num_workers"),
        ({"task": "squad"}, "task"),
        ({"task": "stsb", "search": {"metric": "accuracy"}}, "search.metric"),
        ({"search": {"scheduler_metric": "eval_loss"}}, "search.scheduler_metric"),
        ({"task": "mrpc", "data": {"label_names": ["no", "yes"]}}, "data.label_names"),
        ({"task": "qnli", "data": {"text_columns": ["question"]}}, "data.text_columns"),
        ({"task": "custom", "data": {"text_columns": ["text"]}}, "data.train_file"),
        ({"task": "custom", "data": {"text_columns": ["text"], "train_file": "t.csv"}}, "data.validation_file"),
        (
            {"task": "custom", "data": {"text_columns": ["t"], "regression": True, "label_names": ["a", "b"]}},
            "data.label_names",
        ),
        (
            {
                "task": "mrpc",
                "data": {"train_file": "t.csv", "validation_file": "d.csv", "validation_mismatched_file": "m.csv"},
            },
            "data.validation_mismatched_file",
        ),
    ],
)
def test_impossible_values_name_their_field(raw, field):
    assert field in error_of(raw)


def test_schedulers_rank_on_eval_loss_unless_told_otherwise():
    config = load_config("configs/mrpc.yaml")
    assert (config.metric, config.scheduler_metric) == ("f1", ("eval_loss", "min"))
    assert load_config("configs/mrpc.yaml", ["search.scheduler_metric=accuracy"]).scheduler_metric == (
        "eval_accuracy",
        "max",
    )
    # The search's own metric keeps the search's mode.
    assert load_config("configs/mrpc.yaml", ["search.scheduler_metric=f1", "search.mode=min"]).scheduler_metric == (
        "eval_f1",
        "min",
    )


def test_every_shipped_config_is_valid():
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_every_glue_task_ships_a_config_for_its_hub_data():
    for name, task in GLUE_TASKS.items():
        config = load_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert (config.task, config.data.path, config.data.subset) == (name, "nyu-mll/glue", task.hub_subset)
        assert config.metric == task.main_metric


def test_mnli_can_search_on_its_mismatched_dev_set():
    config = validate_config({"task": "mnli", "search": {"metric": "accuracy_mm"}})
    assert config.task_spec().reported_metrics == ("accuracy", "accuracy_mm")
    # ASHA can rank on the same dev set's loss; other tasks have no loss_mm.
    mismatched = validate_config({"task": "mnli", "search": {"metric": "accuracy_mm", "scheduler_metric": "loss_mm"}})
    assert mismatched.scheduler_metric == ("eval_loss_mm", "min")
    assert "use one of accuracy, f1, loss" in error_of({"task": "mrpc", "search": {"scheduler_metric": "loss_mm"}})


def test_set_overrides_are_read_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": "mrpc"}))
    config = load_config(
        path,
        [
            "train.learning_rate=3e-5",
            "search.num_samples=16",
            "output.keep_checkpoints=false",
            "search.space={learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}",
        ],
    )
    assert config.train.learning_rate == 3e-5
    assert config.search.num_samples == 16
    assert config.output.keep_checkpoints is False
    assert list(config.search.space) == ["learning_rate"]


def test_yaml_11_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 5e-5\n")
    assert load_config(path).train.learning_rate == 5e-5


def test_a_bare_no_for_mixed_precision_means_no_not_false(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")  # YAML 1.1 reads this as false
    assert load_config(path).train.mixed_precision == "no"
    assert load_config(path, ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert "train.mixed_precision" in error_of({"train": {"mixed_precision": True}})


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Runs the CLI in an empty folder; returns the result and whatever it left under runs/."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        result = CliRunner().invoke(main, list(args))
        runs = tmp_path / "runs"
        return result, list(runs.rglob("*")) if runs.exists() else []

    return run


def test_search_with_a_missing_data_folder_exits_2_and_writes_nothing(run_cli):
    result, leftovers = run_cli("search", str(REPO_ROOT / "configs" / "mrpc.yaml"), "--set", "data.path=./no/such/MRPC")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "data.path" in lines[0] and "no/such/MRPC" in lines[0]
    assert leftovers == []


def test_search_with_a_bad_override_exits_2(run_cli):
    result, leftovers = run_cli("search", str(REPO_ROOT / "configs" / "mrpc.yaml"), "--set", "train.num_epochs=0")
    assert result.exit_code == 2
    assert "train.num_epochs" in result.output
    assert leftovers == []


def test_missing_config_file_exits_2(run_cli):
    result, _ = run_cli("search", "nope.yaml")
    assert result.exit_code == 2


def test_missing_local_model_folder_exits_2(run_cli, glue_dir):
    result, leftovers = run_cli(
        "search",
        str(REPO_ROOT / "configs" / "mrpc.yaml"),
        "--set",
        f"data.path={glue_dir / 'MRPC'}",
        "--set",
        "model.name_or_path=./models/none",
    )
    assert result.exit_code == 2
    assert "model.name_or_path" in result.output
    assert leftovers == []


def test_pbt_draws_its_population_at_random_and_refuses_another_algorithm():
    config = load_config("configs/mrpc.yaml", ["search.scheduler=pbt"])
    assert config.search.algorithm == "random"
    with pytest.raises(ConfigError, match="search.algorithm: tpe cannot drive search.scheduler pbt"):
        load_config("configs/mrpc.yaml", ["search.scheduler=pbt", "search.algorithm=tpe"])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "search.space={num_epochs: {choice: [1, 2]}}",
            "search.space: search.scheduler pbt perturbs learning_rate or warmup_ratio",
        ),
        ("output.keep_checkpoints=false", "search.scheduler: pbt restarts weak trials from strong trials' checkpoints"),
        ("search.quantile_fraction=0.7", "search.quantile_fraction"),
    ],
)
def test_pbt_needs_something_to_perturb_and_checkpoints(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/mrpc.yaml", ["search.scheduler=pbt", override])


def test_synch_belongs_to_pbt():
    assert load_config("configs/mrpc.yaml", ["search.scheduler=pbt", "search.synch=true"]).search.synch
    with pytest.raises(ConfigError, match="search.synch: only PBT perturbs in step .search.scheduler is asha."):
        load_config("configs/mrpc.yaml", ["search.synch=true"])


def test_one_worker_trials_train_in_their_own_process_unless_told():
    config = load_config(QUICKSTART)
    assert config.resources.ray_train == "auto" and config.trains_in_trial_process
    assert load_config(QUICKSTART, ["search.scheduler=pbt", "search.algorithm=random"]).trains_in_trial_process
    assert not load_config(QUICKSTART, ["resources.ray_train=always"]).trains_in_trial_process
    assert not load_config(QUICKSTART, ["resources.num_workers=2"]).trains_in_trial_process


def test_a_search_saved_before_ray_train_existed_resumes_with_its_torch_trainers(tmp_path):
    """Its cut-off trials go on from their TorchTrainer's checkpoints (trials/train-<id>)."""
    saved_now = tmp_path / "now.yaml"
    saved_now.write_text(load_config(QUICKSTART).to_yaml())
    assert resume_overrides(saved_now) == []
    raw = yaml.safe_load(saved_now.read_text())
    del raw["resources"]["ray_train"]
    saved_before = tmp_path / "before.yaml"
    saved_before.write_text(yaml.safe_dump(raw))
    resumed = load_config(saved_before, resume_overrides(saved_before))
    assert resumed.resources.ray_train == "always" and not resumed.trains_in_trial_process


@pytest.mark.parametrize(
    ("value", "kept", "trials"),
    [
        ("best", "best", 1),
        ("1", "best", 1),
        ("3", 3, 3),
        ("all", "all", None),
        ("true", "all", None),
        ("none", False, 0),
    ],
)
def test_keep_checkpoints_names_how_many_ended_trials_keep_theirs(value, kept, trials):
    output = load_config(None, [f"output.keep_checkpoints={value}"]).output
    assert output.keep_checkpoints == kept and output.kept_trials == trials


def test_keep_checkpoints_refuses_anything_else():
    with pytest.raises(ConfigError, match="output.keep_checkpoints: 0: give best"):
        load_config(None, ["output.keep_checkpoints=0"])


def test_a_loss_metric_is_minimised_unless_the_config_says_otherwise():
    assert validate_config({"search": {"metric": "loss"}}).search.mode == "min"
    assert validate_config({"search": {"metric": "f1"}}).search.mode == "max"
    assert validate_config({}).search.mode == "max"
    assert validate_config({"search": {"metric": "loss", "mode": "max"}}).search.mode == "max"
