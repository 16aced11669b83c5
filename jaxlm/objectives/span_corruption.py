"""T5's span corruption (Raffel et al. 2020): noised spans of the text become sentinels in the
encoder's input, and the decoder predicts the sentinels and the spans they replaced. The loss is
the decoder's next-token cross-entropy, as for language modelling."""

from __future__ import annotations

import dataclasses

from jaxlm.objectives.lm import DECODER_INPUTS, LanguageModeling

ENCODER_INPUTS = ('encoder_inputs', 'encoder_segment_ids', 'encoder_positions')


@dataclasses.dataclass(frozen=True)
class SpanCorruption(LanguageModeling):
    name: str = 'span_corruption'

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS + ENCODER_INPUTS
