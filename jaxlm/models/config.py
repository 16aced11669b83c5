"""The model schema: one frozen dataclass is both the model's configuration and the source of the
`model` section of `jaxlm.config.default_config()`; a field is added here and nowhere else.

Enumerated fields carry their allowed values in the field's metadata (`choices`), which
`jaxlm.config.validate` checks; `architecture` is checked against the family registry
(`jaxlm/models/registry.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxlm.layers.positions import ROPE_SCALING_KINDS, RopeScaling

NORMS = ('rmsnorm', 'layernorm')
MLPS = ('swiglu', 'gelu', 'geglu')
POSITIONS = ('rope', 'learned', 'sinusoidal', 'alibi', 't5_relative')

# Which activations of a block the backward pass keeps; the rest it recomputes. Matmul outputs
# are named (DenseGeneral.activation_name) so what is kept is the bf16 result the next layer
# reads, not an f32 accumulator (MaxText's named-remat approach).
_QKV = ('query_proj', 'key_proj', 'value_proj')
_ATTENTION = _QKV + ('attention_out',)
_MLP = ('mlp_gate', 'mlp_up', 'mlp_down')
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'save_dots': jax.checkpoint_policies.save_only_these_names(*_ATTENTION, *_MLP),
    'save_dots_except_mlp': jax.checkpoint_policies.save_only_these_names(*_ATTENTION),
    'save_qkv_proj': jax.checkpoint_policies.save_only_these_names(*_QKV),
}
DTYPES = ('float32', 'bfloat16', 'float16')


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return dataclasses.field(default=default, metadata={'choices': choices})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every model field with its default (a small decoder for CPU)."""

    # The family that builds the model (jaxlm/models/registry.py), e.g. 'decoder' or
    # 'encoder_decoder' (T5-style: num_layers in each stack, positions 't5_relative').
    architecture: str = 'decoder'
    vocab_size: int = 512
    num_layers: int = 2
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 32
    mlp_dim: int = 512
    max_seq_len: int = 256
    norm: str = _choice('rmsnorm', NORMS)
    norm_eps: float = 1e-5
    mlp: str = _choice('swiglu', MLPS)
    positions: str = _choice('rope', POSITIONS)
    rope_theta: float = 10000.0
    # RoPE frequency scaling, as transformers' rope_scaling: kind 'none'; 'linear'
    # (inv_freq / factor); 'llama3' (Llama 3.1/3.2: long wavelengths / factor, short kept,
    # smooth in between).
    rope_scaling: RopeScaling = RopeScaling()
    relative_buckets: int = 32  # 't5_relative': T5's bias buckets and the distance they span
    relative_max_distance: int = 128
    sliding_window: int = 0  # > 0: each query attends to the last `sliding_window` tokens
    tie_embeddings: bool = False
    use_bias: bool = False
    qk_norm: bool = False
    num_classes: int = 2  # classes of a classification head (families that have one)
    dropout_rate: float = 0.0
    init_std: float = 0.02
    # Compute dtype of activations and matmuls, and the parameters' dtype: names in a run
    # config, `jnp.dtype`s here.
    dtype: Any = _choice('bfloat16', DTYPES)
    param_dtype: Any = _choice('float32', DTYPES)
    remat_policy: str = _choice('none', tuple(REMAT_POLICIES))

    def __post_init__(self) -> None:
        object.__setattr__(self, 'dtype', jnp.dtype(self.dtype))
        object.__setattr__(self, 'param_dtype', jnp.dtype(self.param_dtype))

    @classmethod
    def from_config(cls, model_cfg: Any) -> ModelConfig:
        """From the `model` section of a run config (a ConfigDict or a dict). Runs saved before a
        field existed get its default."""
        kwargs = dict(model_cfg)
        scaling = kwargs.get('rope_scaling')
        if scaling is not None and not isinstance(scaling, RopeScaling):
            default, given = RopeScaling(), dict(scaling)
            # Each value takes its default's type (a JSON round trip may turn 8.0 into 8).
            kwargs['rope_scaling'] = dataclasses.replace(default, **{
                k: type(getattr(default, k))(v) for k, v in given.items()})
        return cls(**kwargs)


def default_model_config() -> ml_collections.ConfigDict:
    """`ModelConfig()`'s fields as the ConfigDict a run config holds (nested for RoPE
    scaling)."""
    model = ModelConfig()
    fields = dataclasses.asdict(model)
    fields.update(dtype=model.dtype.name, param_dtype=model.param_dtype.name,
                  rope_scaling=ml_collections.ConfigDict(fields['rope_scaling']))
    return ml_collections.ConfigDict(fields)


def field_choices() -> dict[str, tuple[str, ...]]:
    """Field name -> allowed values, for the enumerated fields (and `rope_scaling.kind`)."""
    out = {f.name: f.metadata['choices'] for f in dataclasses.fields(ModelConfig)
           if 'choices' in f.metadata}
    out['rope_scaling.kind'] = ROPE_SCALING_KINDS
    return out
