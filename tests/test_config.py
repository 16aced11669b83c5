"""Config errors are caught before any compile, each naming the field; experiments load."""

import importlib
import importlib.util
import pathlib

import pytest

from jaxlm.config import ConfigError, check_vocab, default_config, resolve_mesh_shape, validate
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import count_params

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(__file__).parent.parent / 'experiments')
                     .glob('*.py') if not p.stem.startswith('_'))


def _cfg(**updates):
    c = default_config()
    for dotted, value in updates.items():
        node = c
        *path, leaf = dotted.split('__')
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


@pytest.mark.parametrize('updates,devices,field', [
    (dict(model__num_heads=6, model__num_kv_heads=4), 1, 'model.num_heads'),
    (dict(mesh__data=3, mesh__fsdp=1), 8, 'mesh'),
    (dict(mesh__data=2, mesh__fsdp=2, mesh__tensor=1), 8, 'device count'),
    (dict(mesh__data=-1, mesh__fsdp=-1), 8, 'only one of'),
    (dict(mesh__data=8, mesh__fsdp=1, data__global_batch_size=12), 8, 'data.global_batch_size'),
    (dict(optimizer__grad_accum_steps=3), 1, 'optimizer.grad_accum_steps'),
    (dict(model__norm='batchnorm'), 1, 'model.norm'),
    (dict(model__remat_policy='sometimes'), 1, 'model.remat_policy'),
    (dict(data__seq_len=1024), 1, 'data.seq_len'),
    (dict(optimizer__warmup_steps=500), 1, 'optimizer.warmup_steps'),
    (dict(logical_axis_rules=(('batch', 'dta'),)), 1, 'logical_axis_rules'),
    (dict(model__num_layers=0), 1, 'model.num_layers'),
    (dict(model__positions='nope'), 1, 'model.positions'),
    (dict(model__architecture='encoder_decoder'), 1, 'model.positions'),
    (dict(model__architecture='encoder_decoder', model__positions='t5_relative'), 1,
     'data.objective'),
    (dict(data__objective='span_corruption'), 1, 'data.objective'),
    (dict(data__noise_density=1.5), 1, 'data.noise_density'),
    (dict(data__source='seqio'), 1, 'data.task'),
])
def test_invalid_configs_name_the_field(updates, devices, field):
    with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
        validate(_cfg(**updates), devices)


def test_unknown_key_is_rejected_with_its_path():
    c = default_config()
    c.optimizer.warmup_step = 5  # typo of warmup_steps
    with pytest.raises(ConfigError, match=r'optimizer\.warmup_step'):
        validate(c, 1)


def test_vocab_smaller_than_tokenizer():
    c = default_config()
    c.model.vocab_size = 256
    with pytest.raises(ConfigError, match='model.vocab_size'):
        check_vocab(c, 259)
    check_vocab(c, 256)


def test_span_corruption_needs_room_for_sentinels():
    c = default_config()
    c.data.objective = 'span_corruption'
    with pytest.raises(ConfigError, match='sentinels'):
        check_vocab(c, c.model.vocab_size)


def test_seqio_without_the_extra_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'seqio' else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'jaxlm\[seqio\]'"):
        validate(_cfg(data__source='seqio', data__task='x'), 1)


def test_jaxlm_imports_without_seqio():
    import subprocess
    import sys

    code = ('import sys; import jaxlm.train, jaxlm.trainer.loop, jaxlm.data.span_corruption; '
            "assert 'seqio' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True,
                   cwd=pathlib.Path(__file__).parent.parent)


def test_mesh_minus_one_takes_the_rest():
    assert resolve_mesh_shape(dict(data=2, fsdp=-1, tensor=2), 8) == dict(data=2, stage=1,
                                                                          fsdp=2, tensor=2)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiments_load_and_validate(name):
    cfg = importlib.import_module(f'experiments.{name}').get_config()
    validate(cfg, 8)
    # The RL recipes compute in float32: their ~70k-parameter models are CPU-bound anyway, and
    # the sampler's log-probs must equal the train step's recomputation.
    want = 'float32' if name in ('grpo_arithmetic', 'ppo_arithmetic') else 'bfloat16'
    assert cfg.model.dtype == want and cfg.model.param_dtype == 'float32'


@pytest.mark.parametrize('name,expected', [
    ('gpt2_124m', 124_439_808),    # HF gpt2
    ('llama_1b', 1_235_814_400),   # meta-llama/Llama-3.2-1B
    ('llama_7b', 6_738_415_616),   # meta-llama/Llama-2-7b-hf
    ('llama_125m', 134_105_856),   # no public checkpoint: closed form
])
def test_public_parameter_counts(name, expected):
    import jax
    import jax.numpy as jnp

    from jaxlm.models.config import ModelConfig
    from jaxlm.models.decoder import Transformer

    cfg = ModelConfig.from_config(
        importlib.import_module(f'experiments.{name}').get_config().model)
    shapes = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8), jnp.int32)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected == count_params(cfg)


def test_tiny_variants():
    tiny = importlib.import_module('experiments.tiny')
    assert tiny.get_config('gpt2').model.norm == 'layernorm'
    assert tiny.get_config('byte').data.tokenizer.kind == 'byte'
    with pytest.raises(ValueError, match='unknown variant'):
        tiny.get_config('nope')
    assert 300_000 <= count_params(ModelConfig.from_config(tiny.get_config().model)) \
        <= 2_000_000


def test_indivisible_sharded_dimension_is_a_config_error():
    import jax

    from jaxlm.trainer.loop import compile_training

    cfg = importlib.import_module('experiments.gpt2_124m').get_config()
    cfg.mesh.update(data=1, fsdp=4, tensor=2)
    cfg.data.update(seq_len=64, global_batch_size=8)
    cfg.model.num_layers = 1
    with pytest.raises(ConfigError, match=r'`vocab`.*50257'):
        compile_training(cfg, jax.devices(), validate(cfg, 8))
