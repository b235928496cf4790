"""A sequence classifier on the mean of the encoder's last-layer token vectors.

`AutoModelForSequenceClassification` classifies from the [CLS] token through the model's
pooler. Sentence-embedding checkpoints (sentence-transformers models such as
all-MiniLM-L6-v2) were trained to represent a text by the mean of its token vectors instead,
and their pooler was never trained for it. `model.pooling: mean` fine-tunes such a
checkpoint through this head (BENCHMARKS.md, MRPC: mean pooling).

This file imports only torch and transformers on purpose: `save_pretrained` copies it beside
the weights, so a saved or exported model loads anywhere, without raytune-ft, with
    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
and without trust_remote_code transformers refuses it, rather than loading the weights into a
[CLS] classifier that would predict something else.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolingConfig(PretrainedConfig):
    """The classifier's labels (PretrainedConfig's own keys) plus the encoder's whole config."""

    model_type = "raytune-ft-mean-pooling"

    def __init__(self, encoder: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder or {}


class MeanPoolingForSequenceClassification(PreTrainedModel):
    config_class = MeanPoolingConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MeanPoolingConfig):
        super().__init__(config)
        encoder_config = AutoConfig.for_model(**config.encoder)
        self.encoder = _without_pooler(AutoModel.from_config(encoder_config))
        self.dropout = nn.Dropout(getattr(encoder_config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_encoder(cls, name_or_path: str, **config_kwargs) -> MeanPoolingForSequenceClassification:
        """A new classifier on a pretrained encoder (a hub id or a save_pretrained folder):
        the encoder's weights, a freshly initialized linear head. A folder that already holds
        a mean-pooling classifier (a checkpoint, an exported model) is loaded as it is."""
        if AutoConfig.from_pretrained(name_or_path).model_type == MeanPoolingConfig.model_type:
            return cls.from_pretrained(name_or_path, **config_kwargs)
        encoder = _without_pooler(AutoModel.from_pretrained(name_or_path))
        encoder_config = encoder.config.to_dict()
        config_kwargs.setdefault("initializer_range", encoder_config.get("initializer_range", 0.02))
        model = cls(MeanPoolingConfig(encoder=encoder_config, **config_kwargs))
        model.encoder = encoder  # the pretrained one replaces the randomly initialized one
        return model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **encoder_kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None:  # BERT's sentence A/B ids; models without them get none
            encoder_kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs).last_hidden_state
        # The mean over real tokens only: padding must not change an example's prediction.
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:  # regression (STS-B): one score per example
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _without_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    """Drop the [CLS] pooler (BERT, RoBERTa, MPNet...): it is never used here, and DDP would
    wait for gradients of parameters that get none."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


# In this process AutoModelForSequenceClassification loads these models without remote code
# (checkpoints, PBT, the test split); save_pretrained writes the auto_map for everyone else.
AutoConfig.register(MeanPoolingConfig.model_type, MeanPoolingConfig, exist_ok=True)
AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingForSequenceClassification, exist_ok=True)
MeanPoolingConfig.register_for_auto_class()
MeanPoolingForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
