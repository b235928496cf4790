"""max_length, fixed or searched: the data is tokenized once per value before Ray starts, and
each trial trains on the sequences its own max_length allows."""

from __future__ import annotations

import json

import pytest
from conftest import quick_config, search_in_process
from transformers import AutoTokenizer

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.data.raw import load_raw_dataset
from raytune_ft.data.tokenized import load_tokenized, prepare_tokenized_copies
from raytune_ft.tuning.tuner import points_to_evaluate


def test_a_run_uses_train_max_length_and_else_data_max_length():
    assert validate_config(quick_config("m")).max_length == 48
    config = validate_config(quick_config("m", train={"max_length": 16}))
    assert config.max_length == 16 and config.max_lengths() == [16]


def test_a_searched_max_length_lists_every_value_and_tries_the_config_value_first():
    config = validate_config(quick_config("m", search={"space": {"max_length": {"choice": [32, 16, 48]}}}))
    assert config.max_lengths() == [16, 32, 48]
    assert points_to_evaluate(config) == [{"max_length": 48}]  # data.max_length, the config's own value


@pytest.mark.parametrize(
    "space, message",
    [
        ({"max_length": {"randint": [16, 64]}}, "search.space.max_length: use choice"),
        ({"max_length": {"choice": [16, 0]}}, "search.space.max_length.choice: 0 is not a valid train.max_length"),
    ],
)
def test_a_max_length_space_must_be_a_choice_of_valid_lengths(space, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as info:
        validate_config(quick_config("m", search={"space": space}))
    assert "\n" not in str(info.value)


def test_the_data_is_tokenized_once_per_searched_value_as_the_tokenizer_truncates(tiny_bert_dir, tmp_path):
    config = validate_config(quick_config(tiny_bert_dir, search={"space": {"max_length": {"choice": [16, 48]}}}))
    # One copy per (model, max_length): one model here.
    prepared = {length: copy for (_, length), copy in prepare_tokenized_copies(config, cache_dir=tmp_path).items()}
    assert sorted(prepared) == [16, 48] and prepared[16][0] != prepared[48][0]
    assert not any(cached for _, cached in prepared.values())
    assert all(cached for _, cached in prepare_tokenized_copies(config, cache_dir=tmp_path).values())

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    raw = load_raw_dataset(config)["train"]
    for length, (path, _) in prepared.items():
        input_ids = list(load_tokenized(path)["train"]["input_ids"])
        expected = tokenizer(list(raw["sentence1"]), list(raw["sentence2"]), truncation=True, max_length=length)
        assert input_ids == expected["input_ids"]
        assert max(len(ids) for ids in input_ids) == min(length, 31)  # the longest pair has 31 tokens
    # Cut to 16, a pair still holds both sentences and ends with [SEP].
    short = load_tokenized(prepared[16][0])["train"][0]
    assert 1 in short["token_type_ids"] and short["input_ids"][-1] == tokenizer.sep_token_id


@pytest.mark.slow
def test_a_trial_with_a_smaller_max_length_trains_on_shorter_sequences(tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        train={"num_epochs": 1},
        search={
            "space": {"max_length": {"choice": [16, 48]}},
            "points_to_evaluate": [{"max_length": 16}, {"max_length": 48}],
            "num_samples": 2,
            "scheduler": "fifo",
            "metric": "accuracy",
        },
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "lengths", "keep_checkpoints": False},
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    assert "tokenized data (max_length 16)" in result.output and "tokenized data (max_length 48)" in result.output

    rows = [json.loads(line) for line in (tmp_path / "runs" / "lengths" / "epochs.jsonl").read_text().splitlines()]
    longest = {row["max_length"]: row["train_longest_sequence"] for row in rows}
    assert longest[16] == 16  # every batch cut to 16 tokens
    assert longest[48] == 31  # the same data uncut: its longest pair has 31 tokens
    assert all(row["examples_trained"] == 64 for row in rows)
