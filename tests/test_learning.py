"""The real pretrained MiniLM learns the quickstart's built-in data in one epoch."""

import pytest
from test_config import REPO_ROOT

from raytune_ft.config import load_config
from raytune_ft.data.tokenized import prepare_tokenized_data
from raytune_ft.training.loop import training_function
from raytune_ft.training.reporters import EpochReporter

# The real MiniLM trains for an epoch.
pytestmark = pytest.mark.slow


class LastEpoch(EpochReporter):
    def report(self, metrics, checkpoint_dir):
        self.metrics = metrics


def test_minilm_learns_the_quickstart_data_in_one_epoch():
    config = load_config(
        REPO_ROOT / "configs" / "quickstart.yaml", ["train.num_epochs=1", "output.keep_checkpoints=false"]
    )
    data_path, _ = prepare_tokenized_data(config)
    reporter = LastEpoch()
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
    # Balanced classes: chance is 0.5. One epoch of the real model gets far above it.
    assert reporter.metrics["eval_accuracy"] >= 0.75, reporter.metrics
    assert reporter.metrics["examples_evaluated"] == 200
