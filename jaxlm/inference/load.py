"""Load a trained run (config, model, tokenizer, parameters) for sampling and evaluation."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxlm.checkpoints import (
    CheckpointError,
    has_checkpoints,
    restore_params,
    split_checkpoint_path,
)
from jaxlm.data.documents import tokenizer_only
from jaxlm.data.hf_tokenizer import TOKENIZER_JSON, HFTokenizer
from jaxlm.data.tokenizers import (
    TOKENIZER_FILE,
    ByteTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
)
from jaxlm.models import lora as lora_lib
from jaxlm.models import params as param_lib
from jaxlm.models.registry import build_model


@dataclasses.dataclass
class LoadedRun:
    config: ml_collections.ConfigDict
    model: nn.Module
    tokenizer: Tokenizer
    params: Any
    step: int
    workdir: str


def load_run(workdir: str, checkpoint: str | None = None, *,
             dtype: str | None = None) -> LoadedRun:
    """Reads `workdir/config.json` and a checkpoint onto the first local device: `checkpoint` is
    a checkpoints directory (its latest step is used; default `workdir/checkpoints`, or the
    config's `init_params_from` while the run has no checkpoint of its own) or one step's
    directory inside it (`.../checkpoints/1200`). `dtype` overrides the compute dtype the run
    trained with (e.g. 'float32'; parameters keep their stored dtype).

    Raises CheckpointError when there is no checkpoint, or when the parameters are not all
    finite (a diverged run scores and samples garbage without any other sign)."""
    cfg = read_run_config(workdir)
    if dtype is not None:
        cfg.model.dtype = dtype
    model = build_model(cfg)
    directory, step = checkpoint_location(workdir, cfg, checkpoint)
    if checkpoint is None and not has_checkpoints(directory):
        raise CheckpointError(f'{workdir} has no checkpoint yet ({directory} holds no step): '
                              'train it first, or pass --checkpoint')
    step, params = restore_model_params(cfg, model, directory, step)
    _require_finite(params, os.path.join(directory, str(step)))
    return LoadedRun(cfg, model, run_tokenizer(workdir, cfg), params, step, workdir)


def restore_model_params(cfg: ml_collections.ConfigDict, model: nn.Module, directory: str,
                         step: int | None) -> tuple[int, Any]:
    """(step, the model's parameters) of checkpoint `step` of `directory` on the first local
    device. A LoRA run's own checkpoints hold adapters only: they are merged into the frozen
    base read from its `init_params_from` (jaxlm/models/lora.py)."""
    abstract = param_lib.abstract(model, cfg.data.seq_len, local_device())
    lora = lora_lib.LoraConfig.from_config(cfg.lora) if 'lora' in cfg else None
    base_dir = split_checkpoint_path(cfg.init_params_from)[0] if cfg.init_params_from else ''
    if lora is None or os.path.abspath(directory) == os.path.abspath(base_dir):
        return restore_params(directory, abstract, step=step)
    base_step = split_checkpoint_path(cfg.init_params_from)[1]
    _, base = restore_params(base_dir, abstract, step=base_step)
    step, adapters = restore_adapters(cfg, model, lora, directory, step)
    return step, jax.jit(functools.partial(lora_lib.merge, lora=lora))(base, adapters)


def restore_adapters(cfg: ml_collections.ConfigDict, model: nn.Module,
                     lora: lora_lib.LoraConfig, directory: str,
                     step: int | None) -> tuple[int, Any]:
    """(step, LoRA adapters) of a LoRA run's checkpoint, on the first local device."""
    abstract = param_lib.abstract(model, cfg.data.seq_len, local_device())
    specs = param_lib.logical_specs(model, cfg.data.seq_len)
    adapters = jax.eval_shape(functools.partial(
        lora_lib.init_adapters, jax.random.key(0), abstract, specs, lora))
    adapters = jax.tree.map(functools.partial(_on, local_device()), adapters)
    return restore_params(directory, adapters, step=step)


def _on(sharding: Any, a: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)


def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.isfinite(x).all()


def _require_finite(params: Any, where: str) -> None:
    finite = jax.tree_util.tree_leaves_with_path(
        jax.device_get(jax.tree.map(_all_finite, params)))
    bad = [jax.tree_util.keystr(path) for path, ok in finite if not ok]
    if bad:
        raise CheckpointError(
            f'checkpoint {where} has non-finite parameters (in {len(bad)} of {len(finite)} '
            f'arrays, e.g. {bad[0]}): the run diverged before this step; pass --checkpoint '
            f'with an earlier step ({os.path.dirname(where)}/STEP)')


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    config_path = os.path.join(workdir, 'config.json')
    if not os.path.exists(config_path):
        raise FileNotFoundError(f'{config_path} not found: is {workdir!r} a jaxlm.train workdir?')
    with open(config_path) as f:
        return ml_collections.ConfigDict(json.load(f))


def checkpoint_location(workdir: str, cfg: ml_collections.ConfigDict,
                        checkpoint: str | None = None) -> tuple[str, int | None]:
    """(checkpoints directory, step or None = latest) that `load_run` reads; see there."""
    own = os.path.join(workdir, 'checkpoints')
    if checkpoint is None and not has_checkpoints(own) and cfg.get('init_params_from'):
        checkpoint = cfg.init_params_from  # e.g. a converted model before any fine-tuning
    return split_checkpoint_path(checkpoint or own)


def local_device() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def run_tokenizer(workdir: str, cfg: ml_collections.ConfigDict) -> Tokenizer:
    """The run's own copy of its tokenizer; only runs from before that copy existed rebuild it
    from the corpus."""
    hf_path = os.path.join(workdir, TOKENIZER_JSON)  # a converted HF checkpoint's
    if os.path.exists(hf_path):
        return HFTokenizer(hf_path)
    path = os.path.join(workdir, TOKENIZER_FILE)
    if os.path.exists(path):
        return SentencePieceTokenizer(path)
    if cfg.data.tokenizer.kind == 'byte' and cfg.data.get('source') != 'mixture':
        return ByteTokenizer()  # a chat run's has the chat markers: tokenizer_only builds it
    return tokenizer_only(cfg.data)
