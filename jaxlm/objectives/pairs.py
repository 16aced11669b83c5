"""What reward modelling and DPO share: their batches are preference pairs as packed rows
(jaxlm/data/preference.py) beside the decoder's inputs; only their losses differ."""

from __future__ import annotations

from typing import Any

from jaxlm.data import preference
from jaxlm.models.family import Field
from jaxlm.objectives.base import DataTransform, Objective
from jaxlm.objectives.lm import DECODER_INPUTS


class PairObjective(Objective):
    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS

    def target_fields(self, data_cfg: Any) -> dict[str, Field]:
        return preference.target_fields(data_cfg)

    def validate(self, data_cfg: Any) -> None:
        preference.check_data(data_cfg, self.name)

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        return preference.data_transform(data_cfg, tokenizer)
