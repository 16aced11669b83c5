"""The model families, by the name `model.architecture` gives: one line each.

Everything architecture-specific goes through the family found here (`family(cfg.model)`); no
other module compares architecture names.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxlm.errors import ConfigError
from jaxlm.layers.pipeline import PipelineSchedule
from jaxlm.models import classifier, decoder, encoder_decoder, policy_value, reward
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import ModelFamily

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    decoder.FAMILY,
    encoder_decoder.FAMILY,
    classifier.FAMILY,
    policy_value.FAMILY,
    reward.FAMILY,
)}


def get(architecture: str) -> ModelFamily:
    if architecture not in FAMILIES:
        raise ConfigError(f'`model.architecture` = {architecture!r} is not one of '
                          f'{tuple(FAMILIES)} (jaxlm/models/registry.py)')
    return FAMILIES[architecture]


def family(model_cfg: Any) -> ModelFamily:
    """The family of a `model` config section (ConfigDict, dict or ModelConfig)."""
    name = model_cfg.architecture if isinstance(model_cfg, ModelConfig) else \
        model_cfg.get('architecture', 'decoder')
    return get(name)


def causal_lm(model_cfg: Any) -> ModelFamily:
    """The family, if it generates and scores text left to right (jaxlm.sample, jaxlm.eval),
    with its decoder alone or conditioned on an encoded prompt (T5); ConfigError naming the
    architecture otherwise."""
    found = family(model_cfg)
    if not found.decodes:
        able = [name for name, f in FAMILIES.items() if f.decodes]
        raise ConfigError(
            f'`model.architecture` = {found.name!r} cannot generate or score text yet: sampling '
            f'and language-model evaluation need one of {able}')
    return found


def build_model(cfg: Any, mesh_shape: dict[str, int] | None = None) -> nn.Module:
    """The run config's model; its layer stacks are pipelined over the `stage` axis of
    `mesh_shape` (training) when it is > 1. Without `mesh_shape`: the layers run in sequence
    (decoding, evaluation, conversion)."""
    schedule = PipelineSchedule()
    if mesh_shape is not None and mesh_shape['stage'] > 1:
        schedule = PipelineSchedule(mesh_shape['stage'], cfg.pipeline.num_microbatches,
                                    cfg.pipeline.num_repeats)
    model_cfg = ModelConfig.from_config(cfg.model)
    return get(model_cfg.architecture).build(model_cfg, schedule)
