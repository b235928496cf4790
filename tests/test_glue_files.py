"""Reading the real GLUE TSV files of ../shared/data/glue, messy as they are."""

from raytune_ft.config import validate_config
from raytune_ft.data.raw import load_raw_dataset


def load(task, folder, glue_dir):
    return load_raw_dataset(validate_config({"task": task, "data": {"path": str(glue_dir / folder)}}))


def test_mrpc_loads_every_row_despite_bom_and_bare_quotes(glue_dir):
    raw = load("mrpc", "MRPC", glue_dir)
    assert (len(raw["train"]), len(raw["validation"])) == (3668, 408)
    assert raw["train"].column_names == ["sentence1", "sentence2", "label"]
    # The first row has double quotes that are not CSV quoting: they stay in the text.
    first = raw["train"][0]
    assert first["sentence1"].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert first["label"] == 1
    # No row swallowed its neighbours (what quoting on would do) and labels are 0/1.
    for split in raw.values():
        assert set(split["label"]) == {0, 1}
        assert all("\t" not in s and "\n" not in s for s in list(split["sentence1"]) + list(split["sentence2"]))
        assert all(s.strip() for s in list(split["sentence1"]) + list(split["sentence2"]))


def test_mrpc_label_balance_matches_the_published_split(glue_dir):
    raw = load("mrpc", "MRPC", glue_dir)
    # MRPC train: 2,474 paraphrases of 3,668; dev: 279 of 408 (the usual 68% positive).
    assert sum(raw["train"]["label"]) == 2474
    assert sum(raw["validation"]["label"]) == 279


def test_sst2_loads_every_row(glue_dir):
    raw = load("sst2", "SST-2", glue_dir)
    assert (len(raw["train"]), len(raw["validation"])) == (67349, 872)
    assert raw["train"].column_names == ["sentence", "label"]
    assert raw["train"][0] == {"sentence": "hide new secretions from the parental units ", "label": 0}


def test_glue_dir_environment_variable_replaces_the_hub(glue_dir, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    raw = load_raw_dataset(validate_config({"task": "mrpc"}))  # data.path defaults to the hub id
    assert len(raw["validation"]) == 408


def test_max_samples_take_a_reproducible_subset(glue_dir):
    config = {
        "task": "mrpc",
        "data": {"path": str(glue_dir / "MRPC"), "max_train_samples": 100, "max_eval_samples": 50},
    }
    first = load_raw_dataset(validate_config(config))
    second = load_raw_dataset(validate_config(config))
    assert (len(first["train"]), len(first["validation"])) == (100, 50)
    assert list(first["train"]["sentence1"]) == list(second["train"]["sentence1"])
