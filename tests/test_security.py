"""Nothing let in: a pkg: model name runs no code of the package, trust_remote_code is off unless
the config turns it on (and then says so), a checkpoint's training state cannot run code when
loaded, and cluster.yaml keeps Ray's job API (which runs any command) off the network."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, quick_config

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.data.sources import resolve_model_path
from raytune_ft.training.checkpointing import TRAINING_STATE_FILE, load_training_state


def write_package(site: Path, name: str, marker: Path, model_from: str | None = None) -> None:
    """An installed package whose import would write `marker`; with model_from, it ships a
    copy of that model in its model/ folder."""
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "def get_model_path():\n    return Path(__file__).parent / 'model'\n"
    )
    if model_from:
        (package / "model").mkdir()
        for file in Path(model_from).iterdir():
            if file.is_file():
                (package / "model" / file.name).symlink_to(file)


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_pkg_finds_a_packaged_model_without_importing_the_package(site, tmp_path, tiny_bert_dir):
    marker = tmp_path / "imported"
    write_package(site, "shipped_model", marker, model_from=str(tiny_bert_dir))
    assert resolve_model_path("pkg:shipped_model") == str((site / "shipped_model" / "model").resolve())
    assert not marker.exists() and "shipped_model" not in sys.modules


def test_pkg_naming_a_package_without_a_model_is_refused_and_runs_none_of_it(site, tmp_path):
    marker = tmp_path / "imported"
    write_package(site, "any_module", marker)
    with pytest.raises(ConfigError, match="package 'any_module' ships no model"):
        resolve_model_path("pkg:any_module")
    assert not marker.exists()
    for name in ("os.path", "../x", ""):
        with pytest.raises(ConfigError, match="is not a package name"):
            resolve_model_path(f"pkg:{name}")


def test_remote_code_is_off_by_default_and_announced_when_on(tmp_path, tiny_bert_dir, capsys):
    from raytune_ft.data.tokenized import load_tokenizer

    plain = validate_config(quick_config(tiny_bert_dir))
    assert plain.model.trust_remote_code is False
    load_tokenizer(plain)
    assert "trust_remote_code" not in capsys.readouterr().err
    load_tokenizer(validate_config(quick_config(tiny_bert_dir, model={"trust_remote_code": True})))
    assert "warning: model.trust_remote_code is on" in capsys.readouterr().err


class WritesAFile:
    """Unpickling this object would write a file (what a hostile training_state.pt could do)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


def test_a_training_state_that_pickles_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    with open(checkpoint / TRAINING_STATE_FILE, "wb") as file:
        pickle.dump({"epoch": 1, "payload": WritesAFile(str(marker))}, file)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_training_state(str(checkpoint))
    assert not marker.exists()


def test_a_real_training_state_loads_with_weights_only(tmp_path):
    """What the loop saves (optimizer and schedule state, numbers, the epoch's metrics) is all
    weights_only can load."""
    from transformers import get_linear_schedule_with_warmup

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 10)
    state = {
        "epoch": 2,
        "best_score": 0.8,
        "first_loss": 0.69,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": schedule.state_dict(),
        "last_metrics": {"eval_accuracy": 0.75, "epoch": 2, "device": "cpu"},
    }
    torch.save(state, tmp_path / TRAINING_STATE_FILE)
    loaded = load_training_state(str(tmp_path))
    assert loaded["epoch"] == 2 and loaded["last_metrics"] == state["last_metrics"]
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_cluster_yaml_keeps_the_dashboard_and_job_api_on_the_head_nodes_localhost():
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    start = next(command for command in config["head_start_ray_commands"] if "ray start" in command)
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
