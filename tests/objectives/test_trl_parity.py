"""Parity with TRL 1.16 (the `posttrain-test` extra): on a tiny jaxlm LLaMA exported to Hugging
Face by `jaxlm.interop.hf.to_hf` (what `python -m jaxlm.convert --to-hf` runs), TRL's
`DPOTrainer.compute_loss` and its logged rewards/* and logps/* metrics on one batch equal jaxlm's
DPO loss on the same pairs (packed one pair per row), and `RewardTrainer.compute_loss` on the
exported `LlamaForSequenceClassification` equals jaxlm's Bradley-Terry loss."""

from __future__ import annotations

import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

import functools

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='TRL parity needs the posttrain-test extra (torch)')
trl = pytest.importorskip('trl', reason="TRL parity needs the posttrain-test extra: pip install "
                                        "-e '.[posttrain-test]' -c requirements/constraints.txt")
torch.set_num_threads(1)

import datasets  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import transformers  # noqa: E402
from flax import traverse_util  # noqa: E402

from jaxlm.checkpoints import save_params  # noqa: E402
from jaxlm.config import default_config  # noqa: E402
from jaxlm.data.preference import PairSide, pair_row, stack_rows  # noqa: E402
from jaxlm.interop import hf as hf_lib  # noqa: E402
from jaxlm.models import params as param_lib  # noqa: E402
from jaxlm.models.registry import build_model, family  # noqa: E402
from jaxlm.objectives.dpo import dpo_loss  # noqa: E402
from jaxlm.objectives.reward import reward_loss  # noqa: E402

SEQ_LEN = 48
TOL = 1e-5
# (prompt, chosen, rejected) token ids: replies of different lengths, no padding id (0) inside.
PAIRS = [([5, 9, 14, 3], [20, 21, 7], [30, 8, 8, 12, 40]),
         ([11, 4, 60, 61, 62, 5], [33], [34, 35]),
         ([7, 7, 19], [50, 51, 52, 53, 54, 55], [44, 45, 46, 47])]
TRL_METRICS = ('rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins',
               'logps/chosen', 'logps/rejected')


def _config(architecture: str):
    c = default_config()
    c.model.update(architecture=architecture, vocab_size=96, num_layers=2, d_model=32,
                   num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=64,
                   positions='rope', norm='rmsnorm', mlp='swiglu', use_bias=False,
                   tie_embeddings=False, dtype='float32', init_std=0.1)
    c.data.update(seq_len=SEQ_LEN)
    c.data.tokenizer.update(kind='byte', vocab_size=259)
    return c


def _apply(cfg):
    """The family's apply for the model of `cfg`, jitted: (params, batch) -> outputs."""
    return jax.jit(functools.partial(family(cfg.model).apply, build_model(cfg)))


@functools.cache
def _decoder_params():
    """Random parameters of the tiny decoder (its backbone is the reward model's too)."""
    model = build_model(_config('decoder'))
    init = jax.jit(functools.partial(param_lib.init_boxed, model, seq_len=SEQ_LEN))
    return nn.unbox(init(jax.random.key(0)))


def _to_hf(cfg, params, root) -> str:
    """A jaxlm run directory holding `params`, exported to an HF folder with `to_hf`."""
    workdir, out = os.path.join(root, 'run'), os.path.join(root, 'hf')
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(cfg.to_json())
    save_params(os.path.join(workdir, 'checkpoints'), 0,
                traverse_util.flatten_dict(jax.device_get(params)).items())
    hf_lib.to_hf(workdir, out)
    return out


def _hf_tokenizer():
    """Only for TRL's constructor (its dataset needs one); the batches are token ids."""
    from tokenizers import Tokenizer, models

    vocab = {f't{i}': i for i in range(96)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token='t3'))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='t0',
                                                eos_token='t2', bos_token='t1', unk_token='t3')


def _dummy_dataset() -> datasets.Dataset:
    return datasets.Dataset.from_dict({'prompt': ['t5 t6'], 'chosen': [' t7'],
                                       'rejected': [' t8']})


def _rows():
    rows = []
    for prompt, chosen, rejected in PAIRS:
        sides = [PairSide(np.asarray(prompt + reply, np.int32), len(prompt),
                          len(prompt) + len(reply)) for reply in (chosen, rejected)]
        rows.append(pair_row(*sides, SEQ_LEN))
    return stack_rows(rows)


def _examples():
    return [{'prompt_ids': p, 'chosen_ids': c, 'rejected_ids': r} for p, c, r in PAIRS]


@pytest.fixture(scope='module')
def dpo_setup(tmp_path_factory):
    """jaxlm's policy and reference (the policy perturbed), and a DPOTrainer over their
    exports."""
    cfg = _config('decoder')
    apply, policy = _apply(cfg), _decoder_params()
    noise = jax.tree.map(lambda x, k: 0.05 * jax.random.normal(k, x.shape, x.dtype), policy,
                         _keys_like(policy, 1))
    reference = jax.tree.map(jax.numpy.add, policy, noise)
    root = tmp_path_factory.mktemp('dpo')
    hf = {name: transformers.AutoModelForCausalLM.from_pretrained(
        _to_hf(cfg, p, str(root / name)), attn_implementation='eager')
        for name, p in (('policy', policy), ('reference', reference))}
    # bf16=False: TRL defaults to bf16 autocast, which accelerate wraps the reference model in.
    args = trl.DPOConfig(output_dir=str(root / 'trl'), beta=0.1, report_to=[], use_cpu=True,
                         bf16=False, per_device_train_batch_size=len(PAIRS))
    trainer = trl.DPOTrainer(model=hf['policy'], ref_model=hf['reference'], args=args,
                             train_dataset=_dummy_dataset(), processing_class=_hf_tokenizer())
    trainer.model.eval()  # no dropout; TRL logs under 'eval' then
    return apply, policy, reference, trainer


def _keys_like(tree, seed: int):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(jax.random.key(seed), len(leaves))))


@pytest.mark.parametrize('loss_type,label_smoothing', [('sigmoid', 0.0), ('ipo', 0.0),
                                                       ('hinge', 0.0), ('robust', 0.2)])
def test_dpo_loss_and_metrics_match_trl(dpo_setup, loss_type, label_smoothing):
    apply, policy, reference, trainer = dpo_setup
    # What DPOTrainer.__init__ sets from DPOConfig(loss_type=[...], label_smoothing=...).
    trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
    trainer.label_smoothing = label_smoothing
    inputs = trainer.data_collator(_examples())
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, inputs))
    trl_metrics = {k: trainer._metrics['eval'][k][-1] for k in TRL_METRICS}

    batch = _rows()
    sums = dpo_loss(apply(policy, batch), apply(reference, batch), batch,
                    beta=0.1, loss_type=loss_type, label_smoothing=label_smoothing)
    pairs = float(sums.weight)
    assert pairs == len(PAIRS)
    ours = {k: float(v) / pairs for k, v in sums.metrics.items()}
    diffs = {'loss': abs(float(sums.loss) / pairs - trl_loss),
             **{k: abs(ours[k] - trl_metrics[k]) for k in TRL_METRICS}}
    print(f'{loss_type}: TRL loss {trl_loss:.6f}, max |diff| {max(diffs.values()):.2e}')
    assert max(diffs.values()) <= TOL, diffs
    assert abs(trl_metrics['rewards/chosen']) > 1e-4  # the reference differs from the policy


def test_reward_loss_matches_trl(tmp_path):
    cfg = _config('reward_model')
    backbone = {k: v for k, v in _decoder_params().items() if k != 'lm_head'}
    params = {**backbone, 'score': 0.3 * jax.random.normal(jax.random.key(2), (32, 1))}
    apply = _apply(cfg)
    hf_dir = _to_hf(cfg, params, str(tmp_path / 'export'))
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        hf_dir, attn_implementation='eager')
    assert type(hf_model).__name__ == 'LlamaForSequenceClassification'
    hf_model.config.pad_token_id = 0
    args = trl.RewardConfig(output_dir=str(tmp_path / 'trl'), report_to=[], use_cpu=True,
                            bf16=False)
    trainer = trl.RewardTrainer(model=hf_model, args=args, train_dataset=_dummy_dataset(),
                                processing_class=_hf_tokenizer())
    inputs = trainer.data_collator([{'chosen_ids': p + c, 'rejected_ids': p + r}
                                    for p, c, r in PAIRS])
    trainer.model.eval()  # no dropout; TRL logs under 'eval' then
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, inputs))
    trl_metrics = {k: trainer._metrics['eval'][k][-1] for k in ('accuracy', 'margin')}

    batch = _rows()
    sums = reward_loss(apply(params, batch), batch)
    pairs = float(sums.weight)
    diffs = {'loss': abs(float(sums.loss) / pairs - trl_loss),
             **{k: abs(float(sums.metrics[k]) / pairs - trl_metrics[k])
                for k in ('accuracy', 'margin')}}
    print(f'reward: TRL loss {trl_loss:.6f}, max |diff| {max(diffs.values()):.2e}')
    assert max(diffs.values()) <= TOL, diffs
