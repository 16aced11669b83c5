"""Hugging Face <-> jaxlm checkpoint conversion (GPT-2, LLaMA 2/3, Mistral, T5.1.1).

Tensors are streamed: HF -> jaxlm reads each safetensors tensor with `safe_open(framework='numpy')`,
reshapes it into jaxlm's layout and writes it into its scanned [num_layers, ...] array; each
completed array is saved (orbax partial saving) and freed before the next is read, so memory holds
about one stacked parameter, never the model. jaxlm -> HF writes shards (default 5 GB) one after
the other from the restored parameters. Both directions write into a staging folder beside the
output, which replaces it only when complete (`staged`).

The jaxlm run written from an HF folder is a run directory before its first step: config.json
with `init_params_from` pointing at a parameters-only orbax checkpoint `params/0` (no optimizer
state is materialised), the tokenizer files and the
original HF config (hf_config.json, the template when converting back). `load_run` (so
`jaxlm.sample`, `jaxlm.eval`) reads `params/`; `jaxlm.train` on the workdir starts fine-tuning from
it with a fresh optimizer state and saves its own `checkpoints/`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

from jaxlm.models.hf_specs import ConversionError, Path, Spec, hf_names

ARCHITECTURES = {'GPT2LMHeadModel': 'gpt2', 'LlamaForCausalLM': 'llama',
                 'MistralForCausalLM': 'mistral', 'T5ForConditionalGeneration': 't5'}
log = logging.getLogger(__name__)
HF_CONFIG_COPY = 'hf_config.json'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer.model', 'tokenizer_config.json',
                   'special_tokens_map.json', 'generation_config.json')
_FLOAT_DTYPES = {np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}
_DTYPE_NAMES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16, 'float16': np.float16}
# Buffers some checkpoints carry that are not parameters (recomputed by every implementation).
_IGNORED_SUFFIXES = ('.attn.bias', '.attn.masked_bias', 'rotary_emb.inv_freq')


# ------------------------------------------------------------------------------- configs


def read_json(path: str) -> Any:
    """A JSON file of a checkpoint; malformed JSON is a ConversionError naming the file."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f'{path} is not valid JSON ({e}): re-download or re-save '
                                  'the checkpoint') from e


def read_hf_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, 'config.json')
    if not os.path.exists(path):
        raise ConversionError(f'{path} not found: is {directory!r} a Hugging Face model folder?')
    return read_json(path)


def family_of(hf: dict[str, Any]) -> str:
    archs = hf.get('architectures') or []
    for a in archs:
        if a in ARCHITECTURES:
            return ARCHITECTURES[a]
    model_type = hf.get('model_type')
    by_type = {'gpt2': 'gpt2', 'llama': 'llama', 'mistral': 'mistral', 't5': 't5'}
    if not archs and model_type in by_type:
        return by_type[model_type]
    raise ConversionError(
        f'unsupported architecture {archs or model_type!r} (model_type {model_type!r}): '
        f'supported are {sorted(ARCHITECTURES)}')


def _rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling) from either the transformers 5 `rope_parameters` or the older
    top-level `rope_theta` / `rope_scaling`; scaling None when there is none."""
    params = dict(hf.get('rope_parameters') or {})
    theta = float(params.get('rope_theta', hf.get('rope_theta', 10000.0)))
    scaling = hf.get('rope_scaling') or params
    kind = scaling.get('rope_type', scaling.get('type', 'default')) if scaling else 'default'
    if kind == 'default':
        return theta, None
    if kind not in ('linear', 'llama3'):
        raise ConversionError(f'unsupported rope scaling {kind!r} (supported: linear, llama3)')
    return theta, {**scaling, 'rope_type': kind}


def model_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """jaxlm `model.*` fields for an HF config (raises ConversionError when not representable)."""
    family = family_of(hf)
    if family == 'gpt2':
        act = hf.get('activation_function', 'gelu_new')
        if act not in ('gelu_new', 'gelu_pytorch_tanh'):
            raise ConversionError(f'GPT-2 activation_function {act!r} is not supported '
                                  "(jaxlm's gelu is the tanh approximation: gelu_new)")
        for flag in ('scale_attn_by_inverse_layer_idx', 'add_cross_attention'):
            if hf.get(flag):
                raise ConversionError(f'GPT-2 `{flag}` = True is not supported')
        if hf.get('scale_attn_weights') is False:
            raise ConversionError('GPT-2 `scale_attn_weights` = False is not supported')
        d, h = hf['n_embd'], hf['n_head']
        return dict(vocab_size=hf['vocab_size'], num_layers=hf['n_layer'], d_model=d,
                    num_heads=h, num_kv_heads=h, head_dim=d // h,
                    mlp_dim=hf.get('n_inner') or 4 * d, max_seq_len=hf['n_positions'],
                    norm='layernorm', norm_eps=float(hf.get('layer_norm_epsilon', 1e-5)),
                    mlp='gelu', positions='learned',
                    tie_embeddings=bool(hf.get('tie_word_embeddings', True)), use_bias=True)
    if family == 't5':
        return _t5_fields(hf)
    # LLaMA / Mistral
    if hf.get('hidden_act', 'silu') != 'silu':
        raise ConversionError(f"hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    if hf.get('attention_bias') or hf.get('mlp_bias'):
        raise ConversionError('attention_bias / mlp_bias = True is not supported')
    h = hf['num_attention_heads']
    fields = dict(vocab_size=hf['vocab_size'], num_layers=hf['num_hidden_layers'],
                  d_model=hf['hidden_size'], num_heads=h,
                  num_kv_heads=hf.get('num_key_value_heads') or h,
                  head_dim=hf.get('head_dim') or hf['hidden_size'] // h,
                  mlp_dim=hf['intermediate_size'], max_seq_len=hf['max_position_embeddings'],
                  norm='rmsnorm', norm_eps=float(hf.get('rms_norm_eps', 1e-6)), mlp='swiglu',
                  positions='rope', tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
                  use_bias=False)
    theta, scaling = _rope(hf)
    fields['rope_theta'] = theta
    if scaling is not None:
        rs = dict(kind=scaling['rope_type'], factor=float(scaling.get('factor', 1.0)))
        if rs['kind'] == 'llama3':
            rs.update(low_freq_factor=float(scaling['low_freq_factor']),
                      high_freq_factor=float(scaling['high_freq_factor']),
                      original_max_seq_len=int(scaling['original_max_position_embeddings']))
        fields['rope_scaling'] = rs
    window = hf.get('sliding_window') if family == 'mistral' else None
    if hf.get('use_sliding_window') is False:
        window = None
    if window:
        fields['sliding_window'] = int(window)
    return fields


def _t5_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """T5.1.1 (`feed_forward_proj` = 'gated-gelu'): the original T5's ReLU MLP is not supported."""
    if hf.get('feed_forward_proj') != 'gated-gelu':
        raise ConversionError(f"T5 feed_forward_proj {hf.get('feed_forward_proj')!r} is not "
                              "supported (T5.1.1's 'gated-gelu' only)")
    layers = hf['num_layers']
    if hf.get('num_decoder_layers', layers) != layers:
        raise ConversionError(f"T5 num_decoder_layers {hf['num_decoder_layers']} != num_layers "
                              f'{layers}: jaxlm stacks have equal depth')
    h = hf['num_heads']
    # jaxlm ties T5-style: shared embedding with decoder outputs scaled by d_model^-0.5 (T5X's
    # logits_via_embedding). transformers >= 5 always ties and says whether it scales in
    # `scale_decoder_outputs`; older configs say `tie_word_embeddings` (False for T5.1.1). An
    # unscaled head is jaxlm's untied lm_head (read from `shared` when the file has no head).
    tied = (bool(hf.get('tie_word_embeddings', True))
            and hf.get('scale_decoder_outputs') is not False)
    return dict(architecture='encoder_decoder', vocab_size=hf['vocab_size'], num_layers=layers,
                d_model=hf['d_model'], num_heads=h, num_kv_heads=h, head_dim=hf['d_kv'],
                mlp_dim=hf['d_ff'], max_seq_len=int(hf.get('n_positions', 512)), norm='rmsnorm',
                norm_eps=float(hf.get('layer_norm_epsilon', 1e-6)), mlp='geglu',
                positions='t5_relative',
                relative_buckets=hf.get('relative_attention_num_buckets', 32),
                relative_max_distance=hf.get('relative_attention_max_distance', 128),
                tie_embeddings=tied, use_bias=False)


def hf_dtype_name(hf: dict[str, Any]) -> str:
    name = hf.get('dtype') or hf.get('torch_dtype') or 'float32'
    return name if name in _DTYPE_NAMES else 'float32'


def jaxlm_config(hf: dict[str, Any], *, dtype: str = 'float32',
                 param_dtype: str = 'float32') -> Any:
    """A full run config (`default_config()`) with `model.*` mapped from the HF config."""
    from jaxlm import config as config_lib

    cfg = config_lib.default_config()
    fields = model_fields(hf)
    for k, v in fields.items():
        if k == 'rope_scaling':
            for kk, vv in v.items():
                cfg.model.rope_scaling[kk] = vv
        else:
            cfg.model[k] = v
    cfg.model.dtype, cfg.model.param_dtype = dtype, param_dtype
    if family_of(hf) == 't5':
        # T5's vocabulary already holds its sentinels (<extra_id_0> = the last tokenizer id).
        cfg.data.update(objective='span_corruption', extra_ids=0)
    cfg.data.seq_len = min(cfg.data.seq_len, cfg.model.max_seq_len)
    cfg.data.tokenizer.vocab_size = cfg.model.vocab_size  # from_hf points it at the run's copy
    return cfg


def hf_config(model: Any, base: dict[str, Any] | None = None,
              dtype: str = 'float32') -> dict[str, Any]:
    """An HF config.json for jaxlm `model` fields (a ConfigDict or dict), starting from `base`
    (the original HF config when the run came from one)."""
    m = dict(model)
    out = _family(m).hf_config(m, base or {})
    out.pop('torch_dtype', None)
    out['dtype'] = dtype
    return out


def _family(m: dict[str, Any]) -> Any:
    """The model family of the `model` fields `m` (jaxlm/models/registry.py)."""
    from jaxlm.models import registry

    return registry.family(m)


# ------------------------------------------------------------------------------- tensor map


def tensor_specs(model: Any) -> list[Spec]:
    """The HF tensors of `model` (jaxlm `model` fields), as its family maps them."""
    m = dict(model)
    return _family(m).hf_specs(m)


# ------------------------------------------------------------------------------- reading


class SafetensorsFolder:
    """Name -> file index over model.safetensors, or the shards of model.safetensors.index.json
    (else every *.safetensors); `get` reads one tensor."""

    def __init__(self, directory: str) -> None:
        self.aliases: dict[str, str] = {}  # name -> stored name of a tied tensor
        index = os.path.join(directory, 'model.safetensors.index.json')
        single = os.path.join(directory, 'model.safetensors')
        if os.path.exists(index):
            weight_map = read_json(index).get('weight_map')
            if not isinstance(weight_map, dict):
                raise ConversionError(f'{index} has no "weight_map" (tensor name -> shard file)')
            self.files = {n: os.path.join(directory, s) for n, s in weight_map.items()}
        else:
            paths = [single] if os.path.exists(single) else sorted(
                glob.glob(os.path.join(directory, '*.safetensors')))
            if not paths:
                raise ConversionError(f'no *.safetensors in {directory} (.bin/.pt checkpoints '
                                      'are not read: re-save with safe_serialization=True)')
            self.files = {}
            for path in paths:
                self.files.update({n: path for n in _read_safetensors(path, _keys)})

    def names(self) -> set[str]:
        return set(self.files)

    def resolve(self, name: str) -> str | None:
        """The stored name: exact, or without a leading 'transformer.'/'model.' (checkpoints of
        the bare base model, e.g. the original gpt2 upload)."""
        if name in self.files:
            return name
        if name in self.aliases:
            return self.aliases[name]
        for prefix in ('transformer.', 'model.'):
            if name.startswith(prefix) and name[len(prefix):] in self.files:
                return name[len(prefix):]
        return None

    def get(self, name: str) -> np.ndarray:
        stored = self.resolve(name)
        if stored is None:
            raise ConversionError(f'missing tensor {name!r} in the checkpoint')
        arr = _read_safetensors(self.files[stored], functools.partial(_tensor, stored))
        if arr.dtype not in _FLOAT_DTYPES:
            raise ConversionError(f'tensor {name!r} has unexpected dtype {arr.dtype} (expected '
                                  'float32, bfloat16 or float16; quantized checkpoints are not '
                                  'supported)')
        return arr


def _keys(f: Any) -> list[str]:
    return list(f.keys())


def _tensor(name: str, f: Any) -> np.ndarray:
    return f.get_tensor(name)


def _read_safetensors(path: str, read: Callable[[Any], Any]) -> Any:
    """`read(f)` of the open safetensors file `path`; a corrupt or truncated file (the library
    raises its own SafetensorError, not an OSError) is a ConversionError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework='numpy') as f:
            return read(f)
    except SafetensorError as e:
        raise ConversionError(f'{path} is not a readable safetensors file ({e}): re-download '
                              'it or re-save the model with safe_serialization=True') from e


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _check_tensor_names(folder: SafetensorsFolder, specs: list[Spec], m: dict[str, Any]) -> None:
    """Missing and unexpected tensors, named before any data is read."""
    expected = [n for spec in specs for n in hf_names(spec, m['num_layers'])]
    missing = [n for n in expected if folder.resolve(n) is None]
    if missing:
        raise ConversionError(f'{len(missing)} tensors missing from the checkpoint: '
                              f'{missing[:8]}')
    used = {folder.resolve(n) for n in expected}
    copies = {c for spec in specs for c in spec.copies}
    leftover = sorted(n for n in folder.names() - used - copies
                      if not n.endswith(_IGNORED_SUFFIXES))
    if leftover:
        raise ConversionError(f'{len(leftover)} tensors have no jaxlm counterpart (unsupported '
                              f'variant?): {leftover[:8]}')


def iter_hf_params(directory: str, model_cfg: Any,
                   param_dtype: Any = np.float32) -> Iterator[tuple[Path, np.ndarray]]:
    """The jaxlm parameters (path, numpy array) of the HF checkpoint in `directory`, streamed: one
    spec's HF tensors are read one at a time into its scanned [num_layers, ...] arrays, which are
    yielded when complete, so memory holds one stacked parameter (plus one HF tensor)."""
    m = dict(model_cfg)
    num_layers = m['num_layers']
    folder = SafetensorsFolder(directory)
    specs = tensor_specs(m)
    for spec in specs:
        if spec.fallback is not None and folder.resolve(spec.hf) is None:
            folder.aliases[spec.hf] = spec.fallback
    _check_tensor_names(folder, specs, m)
    for spec in specs:
        arrays: dict[Path, np.ndarray] = {}
        for layer, name in enumerate(hf_names(spec, num_layers)):
            arr = folder.get(name)
            if tuple(arr.shape) != spec.hf_shape:
                raise ConversionError(f'tensor {name!r}: expected shape {spec.hf_shape}, got '
                                      f'{tuple(arr.shape)}')
            for path, part in zip(spec.paths, spec.to_jax(arr), strict=True):
                if not spec.per_layer:
                    arrays[path] = part.astype(param_dtype)
                    continue
                if layer == 0:
                    arrays[path] = np.empty((num_layers,) + part.shape, param_dtype)
                arrays[path][layer] = part
            del arr
        while arrays:  # hand each array over and drop it here, so the saver can release it
            yield arrays.popitem()


def checked_params(leaves: Iterable[tuple[Path, Any]], model: Any,
                   seq_len: int) -> Iterator[tuple[Path, Any]]:
    """Passes `leaves` through, checking each against the parameter the jaxlm model initialises
    (tree path, shape, dtype); raises at the end if any parameter never came."""
    import flax.linen as nn
    import jax
    from flax import traverse_util

    inputs = _family(model.cfg).init_inputs(min(seq_len, 8))
    expected = traverse_util.flatten_dict(jax.eval_shape(
        lambda: nn.unbox(model.init(jax.random.key(0), *inputs)['params'])))
    seen = set()
    for path, value in leaves:
        want = expected.get(tuple(path))
        if want is None:
            raise ConversionError(f'unexpected parameter {"/".join(path)}')
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise ConversionError(f'parameter {"/".join(path)}: expected {want.shape} '
                                  f'{want.dtype}, got {value.shape} {value.dtype}')
        seen.add(tuple(path))
        yield path, value
    missing = sorted('/'.join(p) for p in set(expected) - seen)
    if missing:
        raise ConversionError(f'parameters missing after conversion: {missing[:8]}')


# ------------------------------------------------------------------------------- output folders


# What marks a folder as a jaxlm run / an HF model folder, i.e. one that --overwrite may replace.
RUN_MARKERS = ('config.json', 'params', 'checkpoints')
HF_MARKERS = ('config.json', '*.safetensors', 'model.safetensors.index.json')


def _overlap(a: str, b: str) -> bool:
    a, b = os.path.realpath(a), os.path.realpath(b)
    return os.path.commonpath([a, b]) in (a, b)


def check_target(target: str, source: str, kind: str, markers: tuple[str, ...],
                 overwrite: bool) -> None:
    """Raises unless `target` may receive a `kind`: new, empty, or (with `overwrite`) a `kind`
    already, identified by `markers`. A folder of anything else is never replaced, nor one that
    holds or is inside `source`."""
    if _overlap(target, source):
        raise ConversionError(f'{target} and {source} overlap: write the {kind} to a folder '
                              f'outside {source}')
    if not os.path.exists(target):
        return
    if not os.path.isdir(target):
        raise ConversionError(f'{target} exists and is not a folder: choose a new folder')
    entries = os.listdir(target)
    if not entries:
        return
    if not any(fnmatch.filter(entries, pattern) for pattern in markers):
        raise ConversionError(f'{target} is not empty and does not hold a {kind}: not replacing '
                              'it; choose a new or empty folder')
    if not overwrite:
        raise ConversionError(f'{target} already holds a {kind}: pass --overwrite to replace '
                              'it (all of its contents), or choose a new folder')


@contextlib.contextmanager
def staged(target: str) -> Iterator[str]:
    """A new folder beside `target` to write into, which replaces `target` (old contents and all:
    no stale shards, index or checkpoints survive) only once the block completes. On an error
    it is removed and `target` stays as it was. Call `check_target` first."""
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    stage = os.path.join(parent, f'.{name}.partial-{uuid.uuid4().hex[:8]}')
    os.mkdir(stage)
    try:
        yield stage
        if os.path.exists(target):
            old = f'{stage}.replaced'
            os.rename(target, old)
            try:
                os.rename(stage, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.rename(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ------------------------------------------------------------------------------- jaxlm run


PARAMS_DIR = 'params'


def write_run(leaves: Iterable[tuple[Path, Any]], cfg: Any, directory: str) -> None:
    """A parameters-only checkpoint `directory/params/0` of `leaves` (streamed, each checked
    against the model), then config.json (whose `init_params_from` names where params/ will
    live) and config.py: `load_run` (sampling, evaluation) reads it, and `jaxlm.train` on the
    workdir starts fine-tuning from it with a fresh optimizer state, saving into `checkpoints/`."""
    from jaxlm.checkpoints import save_params
    from jaxlm.models.registry import build_model

    save_params(os.path.join(directory, PARAMS_DIR), 0,
                checked_params(leaves, build_model(cfg), cfg.data.seq_len))
    with open(os.path.join(directory, 'config.json'), 'w') as f:
        f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))
    with open(os.path.join(directory, 'config.py'), 'w') as f:
        f.write(_CONFIG_PY)


_CONFIG_PY = '''"""Written by jaxlm.convert: this workdir's run config (its config.json), so that
`python -m jaxlm.train --config <workdir>/config.py --workdir <workdir>` fine-tunes it."""

import json
import os

import ml_collections


def get_config():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config.json')) as f:
        return ml_collections.ConfigDict(json.load(f))
'''


def copy_tokenizer(src: str, dst: str) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        path = os.path.join(src, name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(dst, name))
            copied.append(name)
    return copied


def from_hf(hf_dir: str, workdir: str, *, dtype: str = 'float32',
            param_dtype: str = 'float32', overwrite: bool = False) -> Any:
    """Converts the HF folder `hf_dir` into the jaxlm run `workdir`; returns the run config. An
    existing run there is refused, or with `overwrite` replaced (see `staged`)."""
    hf = read_hf_config(hf_dir)
    cfg = jaxlm_config(hf, dtype=dtype, param_dtype=param_dtype)
    workdir = os.path.abspath(workdir)
    check_target(workdir, hf_dir, 'jaxlm run', RUN_MARKERS, overwrite)
    # Fine-tuning tokenizes with the model's own tokenizer, copied into the run below.
    for kind, name in (('hf', 'tokenizer.json'), ('sentencepiece', 'tokenizer.model')):
        if os.path.exists(os.path.join(hf_dir, name)):
            cfg.data.tokenizer.update(kind=kind, path=os.path.join(workdir, name))
            break
    else:  # weights only: sampling needs token ids, fine-tuning a --config.data.tokenizer.*
        log.warning('%s has no tokenizer.json or tokenizer.model; the run gets a byte tokenizer',
                    hf_dir)
        cfg.data.tokenizer.update(kind='byte', vocab_size=259, path='')
    cfg.init_params_from = os.path.join(workdir, PARAMS_DIR)
    with staged(workdir) as stage:
        write_run(iter_hf_params(hf_dir, cfg.model, _DTYPE_NAMES[param_dtype]), cfg, stage)
        with open(os.path.join(stage, HF_CONFIG_COPY), 'w') as f:
            json.dump(hf, f, indent=2, sort_keys=True)
        copy_tokenizer(hf_dir, stage)
    return cfg


# ------------------------------------------------------------------------------- writing HF


def _iter_hf_tensors(read: Callable[[tuple[Path, ...]], list[np.ndarray]], model_cfg: Any,
                     dtype: Any) -> Iterator[tuple[str, np.ndarray]]:
    """HF tensors in spec order; `read(paths)` returns those jaxlm parameters, one spec's at a
    time, so only one stacked parameter is in memory."""
    m = dict(model_cfg)
    for spec in tensor_specs(m):
        arrays = read(spec.paths)
        for layer, name in enumerate(hf_names(spec, m['num_layers'])):
            parts = [a[layer] if spec.per_layer else a for a in arrays]
            yield name, np.ascontiguousarray(spec.to_hf(parts).astype(dtype))
        del arrays


def to_hf(workdir: str, out_dir: str, *, checkpoint: str | None = None,
          dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
          overwrite: bool = False) -> dict[str, Any]:
    """Writes the run in `workdir` as an HF folder: config.json and generation_config.json (with
    the run tokenizer's special ids), model.safetensors (or shards + model.safetensors.index.json)
    and the tokenizer files. Returns the HF config. A non-empty `out_dir` is refused, or with
    `overwrite` replaced (see `staged`). Parameters are restored one spec at a time, so memory
    holds one stacked parameter plus the current shard."""
    from flax import traverse_util

    from jaxlm.checkpoints import has_checkpoints, restore_params
    from jaxlm.inference import load
    from jaxlm.models import params as param_lib
    from jaxlm.models.registry import build_model

    cfg = load.read_run_config(workdir)
    directory, step = load.checkpoint_location(workdir, cfg, checkpoint)
    if step is None and not has_checkpoints(directory):
        raise ConversionError(f'{workdir} has nothing to export: no checkpoint in {directory} '
                              '(train the run first, or name one with --checkpoint)')
    check_target(out_dir, workdir, 'Hugging Face model', HF_MARKERS, overwrite)
    abstract = traverse_util.flatten_dict(param_lib.abstract(
        build_model(cfg), cfg.data.seq_len, load.local_device()))
    merged = None
    if cfg.get('lora', {}).get('rank'):  # adapters over a base: merged once, in memory
        merged = load.restore_model_params(cfg, build_model(cfg), directory, step)[1]

    def read(paths: tuple[Path, ...]) -> list[np.ndarray]:
        params = merged
        if params is None:
            target = traverse_util.unflatten_dict({p: abstract[p] for p in paths})
            _, params = restore_params(directory, target, step)
        return [np.asarray(_get(params, p)) for p in paths]

    base_path = os.path.join(workdir, HF_CONFIG_COPY)
    base = read_json(base_path) if os.path.exists(base_path) else None
    dtype = dtype or (hf_dtype_name(base) if base else cfg.model.param_dtype)
    ids = special_token_ids(load.run_tokenizer(workdir, cfg), cfg, base)
    hf = with_ids(hf_config(cfg.model, base, dtype), ids)
    generation_path = os.path.join(workdir, 'generation_config.json')
    generation = with_ids(read_json(generation_path) if os.path.exists(generation_path)
                          else {}, ids)
    np_dtype = np.dtype(_DTYPE_NAMES[dtype])
    with staged(out_dir) as stage:
        copy_tokenizer(workdir, stage)
        write_safetensors(_iter_hf_tensors(read, cfg.model, np_dtype), cfg.model, stage,
                          np_dtype, max_shard_bytes)
        for name, content in (('config.json', hf), ('generation_config.json', generation)):
            with open(os.path.join(stage, name), 'w') as f:
                json.dump(content, f, indent=2, sort_keys=True)
    return hf


def special_token_ids(tokenizer: Any, cfg: Any, base: dict[str, Any] | None) -> dict[str, int]:
    """The BOS/EOS/PAD ids HF generation must use: the run tokenizer's. Without them transformers
    falls back to per-architecture defaults (LLaMA's EOS 2 is BOS for jaxlm's tokenizers, so
    `generate` never stops). Empty for a converted run without a tokenizer: its byte stand-in
    means nothing to the model, whose original config keeps its ids."""
    if base is not None and cfg.data.tokenizer.kind == 'byte':
        return {}
    return {'bos_token_id': tokenizer.bos_id, 'eos_token_id': tokenizer.eos_id,
            'pad_token_id': tokenizer.pad_id}


def with_ids(config: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """`config` with `ids`, keeping a list that already holds the id (LLaMA 3 instruct models
    stop at several EOS tokens)."""
    out = dict(config)
    for key, value in ids.items():
        if not (isinstance(out.get(key), list) and value in out[key]):
            out[key] = value
    return out


def write_safetensors(tensors: Iterable[tuple[str, np.ndarray]], model_cfg: Any, out_dir: str,
                      dtype: np.dtype, max_shard_bytes: int) -> None:
    """model.safetensors, or shards of at most `max_shard_bytes` and their index, planned from
    the shapes and written one after the other as `tensors` (in spec order) arrive."""
    from safetensors.numpy import save_file

    m = dict(model_cfg)
    sizes = []
    for spec in tensor_specs(m):
        nbytes = math.prod(spec.hf_shape) * dtype.itemsize
        sizes += [(n, nbytes) for n in hf_names(spec, m['num_layers'])]
    shards, current, current_bytes = [], [], 0
    for name, nbytes in sizes:
        if current and current_bytes + nbytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += nbytes
    shards.append(current)
    files = (['model.safetensors'] if len(shards) == 1 else
             [f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))])
    owner = {n: files[i] for i, names in enumerate(shards) for n in names}

    pending: dict[str, np.ndarray] = {}
    shard_index = 0
    for name, arr in tensors:
        pending[name] = arr
        if len(pending) == len(shards[shard_index]):
            save_file(pending, os.path.join(out_dir, files[shard_index]),
                      metadata={'format': 'pt'})
            pending, shard_index = {}, shard_index + 1
    if len(files) > 1:
        total = sum(b for _, b in sizes)
        with open(os.path.join(out_dir, 'model.safetensors.index.json'), 'w') as f:
            json.dump({'metadata': {'total_size': total}, 'weight_map': owner}, f, indent=2)
