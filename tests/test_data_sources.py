"""Every data source on real files the tests write: the original GLUE layout of each task
(headers, header-less CoLA, MNLI's two dev sets, string labels, CRLF line endings, a
byte-order mark), CSV / TSV / JSON Lines / Parquet files, custom labels, and the cache."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.data.raw import load_raw_dataset
from raytune_ft.data.tokenized import prepare_tokenized_data

# ---------------------------------------------------------------------------------------
# The original GLUE download: a header (or none), then tab-separated rows, CRLF endings.

MNLI_TRAIN_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
STSB_HEADER = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
    "score",
]


def mnli_row(index, premise, hypothesis, label, dev=False):
    parses = ["( x )", "( y )", "(ROOT x)", "(ROOT y)"]
    labels = [label] * (5 if dev else 1)
    return [str(index), "31193", f"{index}n", "fiction", *parses, premise, hypothesis, *labels, label]


GLUE_LAYOUTS = {
    # task: (folder, {file: (header or None, rows)}, what the first train row must load as)
    "cola": (
        "CoLA",
        {
            "train.tsv": (
                None,
                [
                    ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
                    ["gj04", "0", "*", "They drank the pub."],
                ],
            ),
            "dev.tsv": (None, [["bc01", "1", "", "The sailors rode the breeze clear of the rocks."]]),
        },
        {"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1},
    ),
    "stsb": (
        "STS-B",
        {
            "train.tsv": (
                STSB_HEADER,
                [
                    [
                        "0",
                        "main-captions",
                        "MSRvid",
                        "2012test",
                        "0001",
                        "none",
                        "none",
                        "A plane is taking off.",
                        "An air plane is taking off.",
                        "5.000",
                    ],
                    [
                        "1",
                        "main-captions",
                        "MSRvid",
                        "2012test",
                        "0004",
                        "none",
                        "none",
                        "A man is playing a flute.",
                        "A man is playing a bamboo flute.",
                        "3.800",
                    ],
                ],
            ),
            "dev.tsv": (
                STSB_HEADER,
                [
                    [
                        "0",
                        "main-captions",
                        "MSRvid",
                        "2012test",
                        "0000",
                        "none",
                        "none",
                        "A man with a hard hat is dancing.",
                        "A man wearing a hard hat is dancing.",
                        "5.000",
                    ]
                ],
            ),
        },
        {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "label": 5.0},
    ),
    "qqp": (
        "QQP",
        {
            "train.tsv": (
                ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                [
                    [
                        "133273",
                        "213221",
                        "213222",
                        'How is the life of a math student? Could you describe your own "experiences"?',
                        "Which level of prepration is enough for the exam jlpt5?",
                        "0",
                    ],
                    [
                        "402555",
                        "536040",
                        "536041",
                        "How do I control my horny emotions?",
                        "How do you control your horniness?",
                        "1",
                    ],
                ],
            ),
            "dev.tsv": (
                ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                [
                    [
                        "201359",
                        "303345",
                        "303346",
                        "Why are African-Americans so beautiful?",
                        "Why are hispanics so beautiful?",
                        "0",
                    ]
                ],
            ),
        },
        {
            "question1": 'How is the life of a math student? Could you describe your own "experiences"?',
            "question2": "Which level of prepration is enough for the exam jlpt5?",
            "label": 0,
        },
    ),
    "mnli": (
        "MNLI",
        {
            "train.tsv": (
                MNLI_TRAIN_HEADER,
                [
                    mnli_row(
                        0,
                        "Conceptually cream skimming has two basic dimensions.",
                        "Product and geography are what make cream skimming work. ",
                        "neutral",
                    ),
                    mnli_row(1, "you know during the season", "You lose the things.", "entailment"),
                ],
            ),
            "dev_matched.tsv": (
                MNLI_DEV_HEADER,
                [mnli_row(0, "The new rights are nice enough", "Everyone really likes them.", "neutral", dev=True)],
            ),
            "dev_mismatched.tsv": (
                MNLI_DEV_HEADER,
                [
                    mnli_row(
                        0,
                        "Your contribution helped make it possible.",
                        "Your contributions were of no help.",
                        "contradiction",
                        dev=True,
                    ),
                    mnli_row(1, "It was the first time.", "It happened before.", "contradiction", dev=True),
                ],
            ),
        },
        {
            "premise": "Conceptually cream skimming has two basic dimensions.",
            "hypothesis": "Product and geography are what make cream skimming work. ",
            "label": 1,
        },
    ),
    "qnli": (
        "QNLI",
        {
            "train.tsv": (
                ["index", "question", "sentence", "label"],
                [
                    [
                        "0",
                        "When did the third Digimon series begin?",
                        "Unlike the two seasons before it, the third season is darker.",
                        "not_entailment",
                    ],
                    [
                        "1",
                        "Which missile batteries often have individual launchers?",
                        "When MANPADS is operated by specialists, batteries may have several dozen teams.",
                        "entailment",
                    ],
                ],
            ),
            "dev.tsv": (
                ["index", "question", "sentence", "label"],
                [
                    [
                        "0",
                        "What came into force after the new constitution?",
                        "As of that day, the new constitution entered into force.",
                        "entailment",
                    ]
                ],
            ),
        },
        {
            "question": "When did the third Digimon series begin?",
            "sentence": "Unlike the two seasons before it, the third season is darker.",
            "label": 1,
        },
    ),
    "rte": (
        "RTE",
        {
            "train.tsv": (
                ["index", "sentence1", "sentence2", "label"],
                [
                    [
                        "0",
                        "No Weapons of Mass Destruction Found in Iraq Yet.",
                        "Weapons of Mass Destruction Found in Iraq.",
                        "not_entailment",
                    ],
                    [
                        "1",
                        "A place of sorrow, after Pope John Paul II died.",
                        "Pope Benedict XVI is the new leader.",
                        "entailment",
                    ],
                ],
            ),
            "dev.tsv": (
                ["index", "sentence1", "sentence2", "label"],
                [
                    [
                        "0",
                        "Dana Reeve, the widow of the actor, died at 44.",
                        "Christopher Reeve had an accident.",
                        "not_entailment",
                    ]
                ],
            ),
        },
        {
            "sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
            "sentence2": "Weapons of Mass Destruction Found in Iraq.",
            "label": 1,
        },
    ),
    "wnli": (
        "WNLI",
        {  # WNLI's files hold ids (1 = entailment), not names
            "train.tsv": (
                ["index", "sentence1", "sentence2", "label"],
                [
                    [
                        "0",
                        "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
                        "The carrot had a hole.",
                        "1",
                    ],
                    [
                        "1",
                        "John couldn't see the stage with Billy in front of him because he is so short.",
                        "John is so short.",
                        "0",
                    ],
                ],
            ),
            "dev.tsv": (
                ["index", "sentence1", "sentence2", "label"],
                [["0", "The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", "0"]],
            ),
        },
        {
            "sentence1": "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
            "sentence2": "The carrot had a hole.",
            "label": 1,
        },
    ),
}


def write_tsv(path, header, rows, line_end="\r\n", bom=False):
    lines = ([header] if header else []) + rows
    text = "".join("\t".join(row) + line_end for row in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_glue_folder(root, task):
    folder_name, files, _ = GLUE_LAYOUTS[task]
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    for name, (header, rows) in files.items():
        write_tsv(folder / name, header, rows)
    return folder


def load(raw_config: dict):
    return load_raw_dataset(validate_config(raw_config))


@pytest.mark.parametrize("task", sorted(GLUE_LAYOUTS))
def test_glue_folder_layout_of_every_task(task, tmp_path):
    folder = write_glue_folder(tmp_path, task)
    raw = load({"task": task, "data": {"path": str(folder)}})
    _, files, first = GLUE_LAYOUTS[task]
    expected_splits = ["train", "validation"] + (["validation_mismatched"] if task == "mnli" else [])
    assert list(raw) == expected_splits
    sizes = [len(rows) for _, rows in files.values()]
    assert [len(raw[split]) for split in expected_splits] == sizes
    assert raw["train"][0] == {**first, "label": pytest.approx(first["label"])}  # STS-B scores are float32
    # CRLF endings leave no carriage return behind in a text or a label.
    assert not any("\r" in str(value) for row in raw["train"] for value in row.values())


def test_glue_labels_by_name_and_by_id(tmp_path):
    mnli = load({"task": "mnli", "data": {"path": str(write_glue_folder(tmp_path, "mnli"))}})
    # entailment, neutral, contradiction = 0, 1, 2 as on the hub
    assert mnli["train"]["label"] == [1, 0]
    assert mnli["validation"]["label"] == [1] and mnli["validation_mismatched"]["label"] == [2, 2]
    rte = load({"task": "rte", "data": {"path": str(write_glue_folder(tmp_path, "rte"))}})
    assert rte["train"].features["label"].names == ["entailment", "not_entailment"]
    assert rte["train"]["label"] == [1, 0]
    cola = load({"task": "cola", "data": {"path": str(write_glue_folder(tmp_path, "cola"))}})
    assert cola["train"]["label"] == [1, 0]


def test_stsb_scores_are_floats(tmp_path):
    raw = load({"task": "stsb", "data": {"path": str(write_glue_folder(tmp_path, "stsb"))}})
    assert raw["train"].features["label"].dtype == "float32"
    assert raw["train"]["label"] == pytest.approx([5.0, 3.8])


def test_glue_dir_finds_every_task_folder(tmp_path, monkeypatch):
    write_glue_folder(tmp_path, "cola")
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    assert len(load({"task": "cola"})["validation"]) == 1


def test_max_eval_samples_applies_to_both_mnli_dev_sets(tmp_path):
    raw = load({"task": "mnli", "data": {"path": str(write_glue_folder(tmp_path, "mnli")), "max_eval_samples": 1}})
    assert (len(raw["validation"]), len(raw["validation_mismatched"])) == (1, 1)


def test_a_glue_folder_without_a_file_names_it(tmp_path):
    folder = write_glue_folder(tmp_path, "mnli")
    (folder / "dev_mismatched.tsv").unlink()
    with pytest.raises(ConfigError, match="dev_mismatched.tsv is missing"):
        load({"task": "mnli", "data": {"path": str(folder)}})


# ---------------------------------------------------------------------------------------
# Local files: CSV, TSV, JSON Lines, Parquet

ROWS = [
    {"text": 'He said "fine", then left.', "other": "x", "label": "positive"},
    {"text": "Commas, tabs and quotes: all kept.", "other": "y", "label": "negative"},
    {"text": "Naïve café, in UTF-8.", "other": "z", "label": "positive"},
]


def write_rows(path, rows):
    """The same rows in the format the suffix says."""
    suffix = path.suffix
    if suffix == ".csv":
        import csv

        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".tsv":
        write_tsv(path, list(rows[0]), [[str(v) for v in row.values()] for row in rows])
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def custom_files(tmp_path, suffix, train=ROWS, validation=ROWS[:2], **data):
    return {
        "task": "custom",
        "data": {
            "train_file": str(write_rows(tmp_path / f"train{suffix}", train)),
            "validation_file": str(write_rows(tmp_path / f"dev{suffix}", validation)),
            "text_columns": ["text"],
            **data,
        },
    }


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_file_format_loads_the_same_rows(suffix, tmp_path):
    raw = load(custom_files(tmp_path, suffix))
    assert raw["train"]["text"] == [row["text"] for row in ROWS]
    assert raw["train"].column_names == ["text", "label"]
    assert (len(raw["train"]), len(raw["validation"])) == (3, 2)
    assert raw["train"]["label"] == [1, 0, 1]  # negative, positive: sorted


def test_string_labels_get_a_sorted_order_that_is_recorded(tmp_path):
    config = validate_config(custom_files(tmp_path, ".csv"))
    raw = load_raw_dataset(config)
    assert config.data.label_names == ["negative", "positive"]  # what config.yaml and every trial see
    assert config.task_spec().label_names == ("negative", "positive")
    assert raw["train"].features["label"].names == ["negative", "positive"]


def test_label_names_in_the_config_set_the_order(tmp_path):
    raw = load(custom_files(tmp_path, ".jsonl", label_names=["positive", "negative"]))
    assert raw["train"]["label"] == [0, 1, 0]


def test_integer_labels_sort_as_numbers(tmp_path):
    rows = [{"text": f"review {i}", "stars": stars} for i, stars in enumerate([10, 2, 1, 2])]
    config = validate_config(custom_files(tmp_path, ".jsonl", train=rows, validation=rows, label_column="stars"))
    raw = load_raw_dataset(config)
    assert config.data.label_names == ["1", "2", "10"]
    assert raw["train"]["label"] == [2, 1, 0, 1]
    # Numbers that are names are never read as ids: 0 is no label here, not the first one.
    config = validate_config(
        custom_files(tmp_path, ".jsonl", train=rows, validation=[{"text": "x", "stars": 0}], label_column="stars")
    )
    with pytest.raises(
        ConfigError,
        match=r"dev.jsonl:1: label 0 is not one of task custom's labels: 1 \(id 0\), 2 \(id 1\), 10 \(id 2\)",
    ):
        load_raw_dataset(config)


def test_a_custom_task_reads_a_folder_of_tsv_files_with_headers(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["id", "review", "label"], [["1", "good", "pos"], ["2", "bad", "neg"]])
    write_tsv(tmp_path / "dev.tsv", ["id", "review", "label"], [["3", "fine", "pos"]])
    raw = load({"task": "custom", "data": {"path": str(tmp_path), "text_columns": ["review"]}})
    assert raw["train"]["review"] == ["good", "bad"] and raw["validation"]["label"] == [1]


def test_f1_is_refused_once_the_data_shows_three_labels(tmp_path):
    rows = [{"text": f"row {i}", "label": name} for i, name in enumerate(["a", "b", "c"])]
    raw_config = {**custom_files(tmp_path, ".csv", train=rows, validation=rows), "search": {"metric": "f1"}}
    config = validate_config(raw_config)  # valid until the labels are known
    with pytest.raises(ConfigError, match="search.metric: 'f1' is not a metric of task custom; use one of accuracy"):
        load_raw_dataset(config)


def test_custom_regression_and_sentence_pairs(tmp_path):
    rows = [{"a": "A man plays.", "b": "Someone plays.", "score": s} for s in (4.5, 1, "2.25")]
    raw = load(
        custom_files(
            tmp_path,
            ".csv",
            train=rows,
            validation=rows,
            text_columns=["a", "b"],
            label_column="score",
            regression=True,
        )
    )
    assert raw["train"].column_names == ["a", "b", "label"]
    assert raw["train"]["label"] == pytest.approx([4.5, 1.0, 2.25])


def test_a_glue_task_from_files_with_its_own_column_names(tmp_path):
    rows = [{"q": "Is it?", "s": "It is.", "y": "entailment"}, {"q": "Was it?", "s": "No.", "y": "not_entailment"}]
    raw = load(
        {
            "task": "qnli",
            "data": {
                "train_file": str(write_rows(tmp_path / "train.csv", rows)),
                "validation_file": str(write_rows(tmp_path / "dev.csv", rows)),
                "text_columns": ["q", "s"],
                "label_column": "y",
            },
        }
    )
    assert raw["train"].column_names == ["question", "sentence", "label"]
    assert raw["train"]["label"] == [0, 1]


def test_mnli_from_files_needs_its_mismatched_dev_set(tmp_path):
    rows = [{"premise": "A.", "hypothesis": "B.", "label": "neutral"}]
    files = {split: str(write_rows(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "dev_mm", "test")}
    with pytest.raises(ConfigError, match="data.validation_mismatched_file: missing"):
        validate_config({"task": "mnli", "data": {"train_file": files["train"], "validation_file": files["dev"]}})
    raw = load(
        {
            "task": "mnli",
            "data": {
                "train_file": files["train"],
                "validation_file": files["dev"],
                "validation_mismatched_file": files["dev_mm"],
                "test_file": files["test"],
            },
        }
    )
    assert list(raw) == ["train", "validation", "validation_mismatched", "test"]


def test_a_test_file_may_come_without_labels(tmp_path):
    config = custom_files(tmp_path, ".csv")
    config["data"]["test_file"] = str(write_rows(tmp_path / "test.csv", [{"text": "No label here."}]))
    raw = load(config)
    assert raw["test"].column_names == ["text"]


def test_files_and_a_local_path_together_are_refused(tmp_path):
    config = custom_files(tmp_path, ".csv")
    config["data"]["path"] = str(tmp_path)
    with pytest.raises(ConfigError, match="give either data.path"):
        validate_config(config)


def test_files_replace_the_hub_default_of_a_shipped_config(tmp_path):
    rows = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    raw = load(
        {
            "task": "sst2",
            "data": {
                "path": "nyu-mll/glue",
                "subset": "sst2",
                "train_file": str(write_rows(tmp_path / "t.parquet", rows)),
                "validation_file": str(write_rows(tmp_path / "v.parquet", rows)),
            },
        }
    )
    assert raw["validation"]["label"] == [1, 0]


def test_the_hub_offline_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as info:
        load({"task": "rte"})  # HF_HUB_OFFLINE=1 in the tests
    assert "data.path" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# Tokenize once: the cache is keyed by the rows' content


def test_second_preparation_hits_the_cache_and_a_changed_file_misses(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setenv("RAYTUNE_FT_CACHE", str(tmp_path / "cache"))
    raw_config = custom_files(tmp_path, ".csv")
    raw_config["model"] = {"name_or_path": str(tiny_bert_dir)}
    first, cached = prepare_tokenized_data(validate_config(raw_config))
    assert not cached
    # A touched file (new mtime, same bytes) is the same data.
    train_file = tmp_path / "train.csv"
    os.utime(train_file, (1, 1))
    again, cached = prepare_tokenized_data(validate_config(raw_config))
    assert (again, cached) == (first, True)
    # One changed sentence is new data.
    write_rows(train_file, [{**ROWS[0], "text": "Something else entirely."}, *ROWS[1:]])
    changed, cached = prepare_tokenized_data(validate_config(raw_config))
    assert changed != first and not cached
    assert sorted(p.name for p in (tmp_path / "cache" / "tokenized").iterdir()) == sorted([first.name, changed.name])
