"""Bad data is refused by `raytune-ft search` before anything starts: exit 2, one line that
names the file, the line or column, and the fix; no run folder, no cache entry."""

import pytest
import yaml
from click.testing import CliRunner
from test_data_sources import STSB_HEADER, write_tsv

from raytune_ft.cli import main

SST2_HEADER = ["sentence", "label"]
GOOD_ROWS = [["a fine film ", "1"], ["a dull film ", "0"]]


def csv_files(tmp_path, train: str, dev: str = "text,label\nfine,good\n") -> dict:
    (tmp_path / "train.csv").write_text(train, encoding="utf-8")
    (tmp_path / "dev.csv").write_text(dev, encoding="utf-8")
    return {
        "task": "custom",
        "data": {
            "train_file": str(tmp_path / "train.csv"),
            "validation_file": str(tmp_path / "dev.csv"),
            "text_columns": ["text"],
        },
    }


def sst2_folder(tmp_path, train_rows, header=SST2_HEADER, encoding="utf-8") -> dict:
    folder = tmp_path / "SST-2"
    folder.mkdir()
    write_tsv(folder / "train.tsv", header, train_rows)
    write_tsv(folder / "dev.tsv", SST2_HEADER, GOOD_ROWS)
    if encoding != "utf-8":  # rewrite the training file in another encoding
        text = (folder / "train.tsv").read_bytes().decode("utf-8")
        (folder / "train.tsv").write_bytes(text.encode(encoding))
    return {"task": "sst2", "data": {"path": str(folder)}}


def missing_file(tmp_path):
    config = csv_files(tmp_path, "text,label\nok,good\n")
    config["data"]["train_file"] = str(tmp_path / "trian.csv")
    return config, ["data.train_file", "trian.csv", "does not exist"]


def missing_text_column(tmp_path):
    return csv_files(tmp_path, "review,label\nok,good\nbad,bad\n"), ["train.csv", "'text'", "data.text_columns"]


def missing_label_column(tmp_path):
    return csv_files(tmp_path, "text,sentiment\nok,good\nbad,bad\n"), ["train.csv", "'label'", "data.label_column"]


def empty_split(tmp_path):
    return csv_files(tmp_path, "text,label\nok,good\nbad,bad\n", dev="text,label\n"), [
        "dev.csv",
        "no rows",
        "validation split",
    ]


def label_outside_the_task(tmp_path):
    folder = tmp_path / "MRPC"
    folder.mkdir()
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(
        folder / "train.tsv",
        header,
        [["1", "1", "2", "He left.", "He went away."], ["2", "3", "4", "It rained.", "The sun shone."]],
        bom=True,
    )
    write_tsv(folder / "dev.tsv", header, [["0", "5", "6", "Yes.", "No."]], bom=True)
    return {"task": "mrpc", "data": {"path": str(folder)}}, [
        "train.tsv:3",
        "label '2'",
        "not_equivalent (id 0), equivalent (id 1)",
    ]


def non_numeric_score(tmp_path):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    row = ["0", "main-news", "headlines", "2015", "0001", "none", "none", "A cat sits.", "A cat is sitting."]
    write_tsv(folder / "train.tsv", STSB_HEADER, [row + ["4.2"], row + ["high"]])
    write_tsv(folder / "dev.tsv", STSB_HEADER, [row + ["3.0"]])
    return {"task": "stsb", "data": {"path": str(folder)}}, [
        "train.tsv:3",
        "'high'",
        "'score'",
        "regression",
        "numeric score",
    ]


def too_few_fields(tmp_path):
    return sst2_folder(tmp_path, [GOOD_ROWS[0], ["a film with no label "], GOOD_ROWS[1]]), [
        "train.tsv:3",
        "1 field where the header has 2",
        "fix the row",
    ]


def empty_sentence(tmp_path):
    return csv_files(tmp_path, "text,label\nok,good\n,bad\n"), ["train.csv:3", "'text' is empty", "fill in the text"]


def not_utf8(tmp_path):
    return sst2_folder(tmp_path, [*GOOD_ROWS, ["un film très réussi ", "1"]], encoding="latin-1"), [
        "train.tsv:4",
        "not UTF-8",
        "save the file as UTF-8",
    ]


CASES = [
    missing_file,
    missing_text_column,
    missing_label_column,
    empty_split,
    label_outside_the_task,
    non_numeric_score,
    too_few_fields,
    empty_sentence,
    not_utf8,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_data_exits_2_with_one_line_and_writes_nothing(case, tmp_path, tiny_bert_dir, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAYTUNE_FT_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    config, expected = case(tmp_path)
    config["model"] = {"name_or_path": str(tiny_bert_dir)}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))

    result = CliRunner().invoke(main, ["search", "search.yaml"])

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert not (tmp_path / "runs").exists()
    assert not cache.exists() or not any(cache.rglob("*"))


# ---------------------------------------------------------------------------------------
# Refused before any trial starts: the config file, output.name, the model, the storage


def refused(tmp_path, raw: dict, *files: str):
    """`raytune-ft search` on a raw config written to tmp_path; asserts exit 2 with one line and
    that no run folder was made; returns the line."""
    config_path = tmp_path / "config.yaml"
    if files:
        config_path.write_bytes(files[0].encode("latin-1"))
    else:
        config_path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["search", str(config_path)])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    return message


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    message = refused(tmp_path, {}, "task: sst2\n# caf\xe9\n")
    assert "not UTF-8 text (byte 0xe9" in message and "save it as UTF-8" in message


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp/absolute", "a/b", ".."])
def test_output_name_is_one_folder_name_inside_output_dir(tmp_path, tiny_bert_dir, name):
    from conftest import quick_config

    raw = quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": name})
    message = refused(tmp_path, raw)
    assert "output.name" in message and "one folder name" in message


def test_max_length_past_the_models_positions_is_refused(tmp_path, tiny_bert_dir):
    from conftest import quick_config

    # The tiny BERT has 128 position embeddings: 256 tokens would crash every trial.
    raw = quick_config(tiny_bert_dir, data={"max_length": 256}, output={"dir": str(tmp_path / "runs")})
    assert "data.max_length: 256 tokens" in refused(tmp_path, raw) and "at most 128 positions" in refused(tmp_path, raw)
    raw["search"] = {"space": {"max_length": {"choice": [64, 200]}}}
    raw["data"]["max_length"] = 64
    assert refused(tmp_path, raw).startswith("error: search.space.max_length: 200 tokens")


def test_a_model_folder_without_weights_is_refused(tmp_path, tiny_bert_dir):
    import shutil

    from conftest import quick_config

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_bert_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    raw = quick_config(no_weights, output={"dir": str(tmp_path / "runs")})
    assert "has no weights (model.safetensors or pytorch_model.bin)" in refused(tmp_path, raw)


def test_storage_that_holds_another_searchs_results_is_refused(tmp_path, tiny_bert_dir):
    from conftest import quick_config

    storage = tmp_path / "storage"
    (storage / "again" / "tune").mkdir(parents=True)  # an earlier search named "again" wrote here
    raw = quick_config(
        tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "again", "storage_path": str(storage)}
    )
    assert "already holds another search's results" in refused(tmp_path, raw)
