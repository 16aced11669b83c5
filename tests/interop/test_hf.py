"""HF <-> jaxlm conversion: logits, round trip, greedy decoding, lm_eval log-likelihood parity,
fine-tuning resume and conversion errors, on tiny random transformers models (no download)."""

from __future__ import annotations

import json
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
tokenizers = pytest.importorskip('tokenizers')
torch.set_num_threads(1)

from jaxlm.interop import hf as hf_lib  # noqa: E402

TEXTS = ['To be, or not to be, that is the question.',
         'The quick brown fox jumps over the lazy dog.',
         'All the world is a stage, and all the men and women merely players.',
         'Now is the winter of our discontent made glorious summer by this sun of York.',
         'Friends, Romans, countrymen, lend me your ears; I come to bury Caesar.']
REQUESTS = [('To be, or not', ' to be'), ('The quick brown', ' fox jumps'),
            ('All the world is a ', 'stage, and all'), ('Now is the winter', ' of our'),
            ('Friends, Romans,', ' countrymen, lend me your ears')]


def _tokenizer(directory: str) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE trained here; its post-processor prepends <s> (as LLaMA's does), so HF
    `encode` with special tokens gives exactly jaxlm's [bos] + encode(text)."""
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=['<pad>', '<s>', '</s>'],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single='<s> $A', special_tokens=[
        ('<s>', tok.token_to_id('<s>'))])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token='<s>',
                                                eos_token='</s>', pad_token='<pad>')
    fast.save_pretrained(directory)
    return fast


def _hf_model(family: str, vocab: int):
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  initializer_range=0.1)
    if family == 'gpt2':
        cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, **common)
        cls = transformers.GPT2LMHeadModel
    else:
        kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, **common)
        if family == 'llama':
            cfg, cls = transformers.LlamaConfig(**kw), transformers.LlamaForCausalLM
        elif family == 'llama3':
            cfg = transformers.LlamaConfig(rope_parameters=dict(
                rope_type='llama3', rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                high_freq_factor=4.0, original_max_position_embeddings=16), **kw)
            cls = transformers.LlamaForCausalLM
        elif family == 'mistral':
            cfg = transformers.MistralConfig(sliding_window=6, **kw)
            cls = transformers.MistralForCausalLM
        else:
            raise ValueError(family)
    if family != 'gpt2':
        cfg._attn_implementation = 'eager'
    torch.manual_seed(0)
    return cls(cfg).eval()


FAMILIES = ['gpt2', 'llama', 'llama3', 'mistral']


@pytest.fixture(scope='module', params=FAMILIES)
def converted(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(family)
    hf_dir, workdir = str(root / 'hf'), str(root / 'run')
    tok = _tokenizer(hf_dir)
    model = _hf_model(family, len(tok))
    model.save_pretrained(hf_dir, safe_serialization=True)
    hf_lib.from_hf(hf_dir, workdir)
    from jaxlm.inference.load import load_run

    run = load_run(workdir)
    return family, hf_dir, workdir, model, tok, run


def test_logits_match(converted):
    family, _, _, model, _, run = converted
    ids = np.random.default_rng(0).integers(3, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        want = model(torch.tensor(ids)).logits.numpy()
    got = np.asarray(run.model.apply({'params': run.params}, ids))
    diff = float(np.abs(got - want).max())
    print(f'{family}: max |logits diff| = {diff:.2e}')
    assert diff <= 1e-4, diff


def test_round_trip_bit_identical(converted, tmp_path):
    from safetensors import safe_open

    _, hf_dir, workdir, _, _, _ = converted
    out = str(tmp_path / 'back')
    hf_lib.to_hf(workdir, out)
    with safe_open(os.path.join(hf_dir, 'model.safetensors'), framework='numpy') as a, \
            safe_open(os.path.join(out, 'model.safetensors'), framework='numpy') as b:
        assert set(a.keys()) == set(b.keys())
        for name in a.keys():
            x, y = a.get_tensor(name), b.get_tensor(name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), name
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        assert os.path.exists(os.path.join(out, name))
    # transformers itself loads what was written, with the same config.
    back = type(converted[3]).from_pretrained(out).eval()
    assert back.config.to_dict()['vocab_size'] == converted[3].config.vocab_size


def test_bf16_round_trip(converted, tmp_path):
    """A bfloat16 HF checkpoint comes back bit-identical (f32 params hold bf16 exactly)."""
    family, hf_dir, _, model, _, _ = converted
    src, run, out = (str(tmp_path / n) for n in ('bf16', 'run', 'back'))
    import copy

    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(src, safe_serialization=True)
    hf_lib.from_hf(src, run)
    hf_lib.to_hf(run, out)
    from safetensors import safe_open

    with safe_open(os.path.join(src, 'model.safetensors'), framework='numpy') as a, \
            safe_open(os.path.join(out, 'model.safetensors'), framework='numpy') as b:
        for name in a.keys():
            assert b.get_tensor(name).dtype == a.get_tensor(name).dtype, name
            assert b.get_tensor(name).tobytes() == a.get_tensor(name).tobytes(), name


def test_greedy_generation_matches(converted):
    from jaxlm.inference.decode import generate

    family, _, _, model, tok, run = converted
    prompts = [tok.encode(t) for t in ('To be, or not', 'The quick brown fox')]
    eos = run.tokenizer.eos_id
    ours = generate(run.model, run.params, prompts, max_new_tokens=20, temperature=0.0,
                    eos_id=eos)
    for prompt, got in zip(prompts, ours, strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20,
                                 pad_token_id=0, eos_token_id=eos)
        want = out[0, len(prompt):].tolist()
        want = want[:want.index(eos)] if eos in want else want  # jaxlm cuts before eos
        assert got == want, (family, got, want)


def test_loglikelihood_matches_lm_eval(converted):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from jaxlm.evaluation.lm import JaxLM

    family, _, _, model, tok, run = converted
    # Both sides see [<s>] + context: the tokenizer's post-processor adds <s> for HFLM
    # (add_bos_token=True) and JaxLM prepends the run tokenizer's bos_id.
    assert run.tokenizer.bos_id == tok.bos_token_id
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=2, add_bos_token=True,
                max_length=64)
    instances = [Instance(request_type='loglikelihood', doc={}, arguments=r, idx=0)
                 for r in REQUESTS]
    want = hflm.loglikelihood(instances, disable_tqdm=True)
    got = JaxLM(run.model, run.params, run.tokenizer, batch_size=4).loglikelihood(REQUESTS)
    diffs = [abs(g[0] - w[0]) for g, w in zip(got, want, strict=True)]
    print(f'{family}: max |loglikelihood diff| = {max(diffs):.2e}')
    assert max(diffs) <= 1e-4, diffs
    assert [g[1] for g in got] == [w[1] for w in want]


def test_hf_tokenizer_protocol(converted):
    from jaxlm.data.tokenizers import Tokenizer

    _, _, _, _, tok, run = converted
    assert isinstance(run.tokenizer, Tokenizer)
    text = 'To be, or not to be'
    assert run.tokenizer.encode(text) == tok.encode(text, add_special_tokens=False)
    assert run.tokenizer.decode(run.tokenizer.encode(text)) == text
    assert (run.tokenizer.bos_id, run.tokenizer.eos_id, run.tokenizer.pad_id) == (1, 2, 0)
    assert run.tokenizer.vocab_size == len(tok)


def test_finetune_resumes_from_converted(converted, shared_data_dir, tmp_path, capsys):
    """jaxlm.train continues from the converted step-0 checkpoint (not a fresh init)."""
    import shutil

    import ml_collections

    from jaxlm.trainer.loop import train

    family, _, workdir, _, _, run = converted
    if family != 'llama':
        pytest.skip('one family is enough for the trainer path')
    work = str(tmp_path / 'ft')
    shutil.copytree(workdir, work)
    with open(os.path.join(work, 'config.json')) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    cfg.data.update(data_dir=str(shared_data_dir), seq_len=32, global_batch_size=8,
                    num_eval_batches=1)
    cfg.mesh.update(data=1, fsdp=1, tensor=1)
    cfg.update(num_train_steps=2, log_every_steps=1, eval_every_steps=1000,
               checkpoint_every_steps=1000)
    import jax

    summary = train(cfg, work, devices=jax.devices()[:1])
    assert f'initialised parameters from {workdir}/params (step 0)' in capsys.readouterr().out
    assert summary['step'] == 2
    assert sorted(os.listdir(os.path.join(work, 'checkpoints'))) == ['2']
    # Training again resumes from the run's own checkpoint, not from the converted parameters.
    cfg.num_train_steps = 3
    train(cfg, work, devices=jax.devices()[:1])
    assert f'resumed from {work}/checkpoints/2' in capsys.readouterr().out


def _write(directory, config, tensors):
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'config.json'), 'w') as f:
        json.dump(config, f)
    save_file(tensors, os.path.join(directory, 'model.safetensors'))


def test_errors(tmp_path):
    llama = dict(architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=16,
                 hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                 tie_word_embeddings=True)
    good = {'model.embed_tokens.weight': np.zeros((16, 8), np.float32),
            'model.layers.0.input_layernorm.weight': np.ones(8, np.float32),
            'model.layers.0.self_attn.q_proj.weight': np.zeros((8, 8), np.float32),
            'model.layers.0.self_attn.k_proj.weight': np.zeros((4, 8), np.float32),
            'model.layers.0.self_attn.v_proj.weight': np.zeros((4, 8), np.float32),
            'model.layers.0.self_attn.o_proj.weight': np.zeros((8, 8), np.float32),
            'model.layers.0.post_attention_layernorm.weight': np.ones(8, np.float32),
            'model.layers.0.mlp.gate_proj.weight': np.zeros((16, 8), np.float32),
            'model.layers.0.mlp.up_proj.weight': np.zeros((16, 8), np.float32),
            'model.layers.0.mlp.down_proj.weight': np.zeros((8, 16), np.float32),
            'model.norm.weight': np.ones(8, np.float32)}
    _write(tmp_path / 'ok', llama, good)
    hf_lib.from_hf(str(tmp_path / 'ok'), str(tmp_path / 'ok_run'))

    _write(tmp_path / 'falcon', dict(architectures=['FalconForCausalLM'],
                                     model_type='falcon'), good)
    with pytest.raises(hf_lib.ConversionError, match='unsupported architecture.*Falcon'):
        hf_lib.from_hf(str(tmp_path / 'falcon'), str(tmp_path / 'r1'))

    missing = {k: v for k, v in good.items() if 'k_proj' not in k}
    _write(tmp_path / 'missing', llama, missing)
    with pytest.raises(hf_lib.ConversionError,
                       match=r"1 tensors missing .*'model.layers.0.self_attn.k_proj.weight'"):
        hf_lib.from_hf(str(tmp_path / 'missing'), str(tmp_path / 'r2'))

    wrong = {**good, 'model.layers.0.mlp.up_proj.weight': np.zeros((12, 8), np.float32)}
    _write(tmp_path / 'shape', llama, wrong)
    with pytest.raises(hf_lib.ConversionError, match=r"'model.layers.0.mlp.up_proj.weight': "
                       r'expected shape \(16, 8\), got \(12, 8\)'):
        hf_lib.from_hf(str(tmp_path / 'shape'), str(tmp_path / 'r3'))
    # The error came after earlier parameters were saved: no run, staging or config left.
    assert not (tmp_path / 'r3').exists()
    assert not [n for n in os.listdir(tmp_path) if '.partial-' in n]

    ints = {**good, 'model.norm.weight': np.ones(8, np.int32)}
    _write(tmp_path / 'dtype', llama, ints)
    with pytest.raises(hf_lib.ConversionError, match="'model.norm.weight' has unexpected dtype"):
        hf_lib.from_hf(str(tmp_path / 'dtype'), str(tmp_path / 'r4'))

    extra = {**good, 'model.layers.0.self_attn.q_proj.bias': np.zeros(8, np.float32)}
    _write(tmp_path / 'extra', llama, extra)
    with pytest.raises(hf_lib.ConversionError, match='no jaxlm counterpart'):
        hf_lib.from_hf(str(tmp_path / 'extra'), str(tmp_path / 'r5'))


def test_sharded_write_and_read(converted, tmp_path):
    """--to-hf with a small shard size writes an index; --from-hf reads it back identically."""
    family, _, workdir, _, _, run = converted
    if family != 'gpt2':
        pytest.skip('one family is enough')
    out, again = str(tmp_path / 'sharded'), str(tmp_path / 'again')
    hf_lib.to_hf(workdir, out, max_shard_bytes=20_000)
    index = json.load(open(os.path.join(out, 'model.safetensors.index.json')))
    assert len(set(index['weight_map'].values())) > 1
    hf_lib.from_hf(out, again)
    from jaxlm.inference.load import load_run

    back = load_run(again)
    import jax

    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(back.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
