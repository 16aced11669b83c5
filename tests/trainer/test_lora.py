"""LoRA: adapters are the only trained and checkpointed parameters, over a frozen base; step 0 is
the base model; a LoRA run resumes bitwise, trains the same on a mesh, grows no vocabulary, and
samples and exports with the adapters merged."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import read_metrics, small_config, train_losses
from flax import traverse_util

from jaxlm.config import ConfigError, validate
from jaxlm.inference.load import load_run
from jaxlm.models import lora as lora_lib
from jaxlm.models import params as param_lib
from jaxlm.models import registry
from jaxlm.models.registry import build_model
from jaxlm.trainer.loop import train

TARGETS = r'attention/(query|out)/kernel|mlp/down'


def _lora_cfg(data_dir, base_dir, steps, **mesh):
    c = small_config(data_dir, **mesh)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 3
    c.init_params_from = str(base_dir / 'checkpoints')
    c.lora.update(rank=4, alpha=8.0, targets=TARGETS)
    c.optimizer.update(learning_rate=3e-2, weight_decay=0.0)
    return c


def _train(cfg, workdir):
    """On as many devices as the config's mesh has."""
    return train(cfg, str(workdir), devices=jax.devices()[:math.prod(cfg.mesh.values())])


@pytest.fixture(scope='module')
def base_run(shared_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('base')
    _train(small_config(shared_data_dir), workdir)
    return workdir


@pytest.fixture(scope='module')
def lora_run(shared_data_dir, base_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('lora')
    _train(_lora_cfg(shared_data_dir, base_run, 6), workdir)
    return workdir


def _eval_loss(workdir):
    return [r['eval_loss'] for r in read_metrics(workdir) if 'eval_loss' in r][-1]


def test_merge_adds_the_scaled_product_in_each_kernels_layout():
    cfg = small_config('.')
    model = build_model(cfg)
    specs, shapes = param_lib.logical_specs(model, 32), param_lib.shapes(model, 32)
    lora = lora_lib.LoraConfig(rank=2, alpha=4.0, targets=TARGETS)
    base = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes)
    adapters = lora_lib.init_adapters(jax.random.key(1), shapes, specs, lora)
    assert set(traverse_util.flatten_dict(adapters)) == {
        ('layers', 'attention', name, 'kernel', part)
        for name in ('query', 'out') for part in 'ab'} | {
        ('layers', 'mlp', 'down', 'kernel', part) for part in 'ab'}
    # B = 0: the merged model is the base.
    merged = lora_lib.merge(base, adapters, lora)
    jax.tree.map(np.testing.assert_array_equal, merged, base)
    # query [layers, embed, heads, head_dim] reads embed; out [layers, heads, head_dim, embed]
    # writes embed.
    q, o = adapters['layers']['attention']['query']['kernel'], \
        adapters['layers']['attention']['out']['kernel']
    assert q['a'].shape == (2, 64, 2) and q['b'].shape == (2, 2, 4 * 16)
    assert o['a'].shape == (2, 4 * 16, 2) and o['b'].shape == (2, 2, 64)
    q = {**q, 'b': jnp.full(q['b'].shape, 0.5)}
    adapters['layers']['attention']['query']['kernel'] = q
    merged = lora_lib.merge(base, adapters, lora)
    want = 1.0 + 2.0 * np.einsum('lir,lro->lio', q['a'], q['b']).reshape(2, 64, 4, 16)
    np.testing.assert_allclose(merged['layers']['attention']['query']['kernel'], want,
                               rtol=1e-6)


def test_lora_trains_only_adapters_and_checkpoints_only_them(lora_run, base_run):
    # Held-out loss on the same eval batches: the adapters improved on the base.
    assert _eval_loss(lora_run) < _eval_loss(base_run) - 0.01
    manager = ocp.CheckpointManager(
        str(lora_run / 'checkpoints'), item_handlers={'state': ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True))
    state = manager.item_metadata(6)['state']
    saved = traverse_util.flatten_dict(state['params'])
    assert {k[-1] for k in saved} == {'a', 'b'}
    # (A + B) of query, out and down, x 2 layers.
    adapter_size = 2 * ((64 * 4 + 4 * 64) * 2 + 128 * 4 + 4 * 64)
    assert sum(math.prod(v.shape) for v in saved.values()) == adapter_size
    # Adam's two moments track the adapters only: no copy of the base in the checkpoint.
    assert sum(math.prod(v.shape) for v in jax.tree.leaves(state['opt_state'])
               if len(v.shape)) == 2 * adapter_size
    assert 'frozen' not in state
    # Sampling and evaluation see base + adapters: not the base, and the base itself unchanged.
    base = load_run(str(base_run)).params
    merged = load_run(str(lora_run)).params
    assert not np.allclose(merged['layers']['attention']['query']['kernel'],
                           base['layers']['attention']['query']['kernel'])
    np.testing.assert_array_equal(merged['layers']['attention']['key']['kernel'],
                                  base['layers']['attention']['key']['kernel'])


def test_lora_resumes_bitwise_and_matches_on_a_mesh(lora_run, base_run, shared_data_dir,
                                                    tmp_path):
    full = train_losses(lora_run)
    half = tmp_path / 'half'
    _train(_lora_cfg(shared_data_dir, base_run, 3), half)
    _train(_lora_cfg(shared_data_dir, base_run, 6), half)
    assert [train_losses(half)[s] for s in (4, 5, 6)] == [full[4], full[5], full[6]]
    sharded = tmp_path / 'sharded'
    _train(_lora_cfg(shared_data_dir, base_run, 3, data=2, fsdp=2, tensor=2), sharded)
    np.testing.assert_allclose([train_losses(sharded)[s] for s in range(1, 4)],
                               [full[s] for s in range(1, 4)], rtol=2e-5)


def test_lora_config_errors(shared_data_dir, base_run, tmp_path):
    c = _lora_cfg(shared_data_dir, base_run, 2)
    c.init_params_from = ''
    with pytest.raises(ConfigError, match='init_params_from'):
        validate(c, 1)
    c = _lora_cfg(shared_data_dir, base_run, 2)
    c.lora.targets = 'attention/(query'
    with pytest.raises(ConfigError, match='regular expression'):
        validate(c, 1)
    c = _lora_cfg(shared_data_dir, base_run, 2)
    c.lora.targets = 'no_such_kernel'
    with pytest.raises(ConfigError, match='matches no kernel'):
        _train(c, tmp_path / 'none')
    c = _lora_cfg(shared_data_dir, base_run, 2)
    c.model.vocab_size = 272  # the base has 264 rows: LoRA would leave new rows untrained
    with pytest.raises(ConfigError, match='not under LoRA'):
        _train(c, tmp_path / 'vocab')


def test_full_fine_tune_grows_the_vocabulary_of_init_params(shared_data_dir, base_run,
                                                            tmp_path):
    c = small_config(shared_data_dir)
    c.num_train_steps = 1
    c.init_params_from = str(base_run / 'checkpoints')
    c.model.vocab_size = 272
    c.optimizer.learning_rate = 0.0  # the saved step 1 is the grown initialisation
    workdir = tmp_path / 'grown'
    _train(c, workdir)
    base = np.asarray(load_run(str(base_run)).params['token_embed']['embedding'])
    grown = np.asarray(load_run(str(workdir)).params['token_embed']['embedding'])
    assert base.shape == (264, 64) and grown.shape == (272, 64)
    np.testing.assert_array_equal(grown[:264], base)
    np.testing.assert_allclose(grown[264:], np.broadcast_to(base.mean(0), (8, 64)), atol=1e-8)


def _jaxlm_logits(workdir, tokens):
    run = load_run(str(workdir))
    batch = {'inputs': tokens, 'segment_ids': np.ones_like(tokens),
             'positions': np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)}
    return np.asarray(registry.family(run.config.model).apply(run.model, run.params, batch))


def test_exports_merged_and_as_a_peft_adapter(lora_run, base_run, tmp_path):
    """`--to-hf` of a LoRA run gives the merged model; `--to-peft` gives adapters that PEFT
    loads over the exported base: both compute jaxlm's logits."""
    torch = pytest.importorskip('torch')
    transformers = pytest.importorskip('transformers')
    peft = pytest.importorskip('peft')
    from jaxlm.interop.hf import to_hf
    from jaxlm.interop.peft import to_peft

    tokens = np.random.default_rng(0).integers(0, 259, (2, 16)).astype(np.int32)
    want = _jaxlm_logits(lora_run, tokens)
    assert not np.allclose(want, _jaxlm_logits(base_run, tokens), atol=1e-3)
    to_hf(str(lora_run), str(tmp_path / 'merged'))
    to_hf(str(base_run), str(tmp_path / 'base'))
    assert to_peft(str(lora_run), str(tmp_path / 'adapter')) == ['down_proj', 'o_proj',
                                                                 'q_proj']
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'merged')
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'base')
    adapted = peft.PeftModel.from_pretrained(base, tmp_path / 'adapter')
    with torch.no_grad():
        for model in (merged, adapted):
            got = model(torch.from_numpy(tokens).long()).logits.numpy()
            np.testing.assert_allclose(got, want, atol=2e-4)
