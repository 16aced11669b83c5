"""`python -m jaxlm.convert` as a user runs it: fine-tuning a converted SentencePiece model,
refusing to overwrite (and --overwrite replacing whole folders, atomically), the tokenizer's
special ids in an exported run, and short errors for broken input. Tiny random models."""

from __future__ import annotations

import functools
import glob
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from test_hf import TEXTS, _hf_model  # noqa: E402

from jaxlm.data.tokenizers import SentencePieceTokenizer, train_sentencepiece  # noqa: E402
from jaxlm.interop import hf as hf_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = 320
RUN_FILES = ['config.json', 'config.py', 'generation_config.json', 'hf_config.json', 'params',
             'tokenizer.model']


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m args` on one CPU device (the tiny runs need no mesh)."""
    return subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'HF_HUB_OFFLINE': '1',
                                            'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
                                            **env})


def _train_args(data_dir, steps: int) -> list[str]:
    return [f'--config.data.data_dir={data_dir}', '--config.data.seq_len=32',
            '--config.data.global_batch_size=4', '--config.data.num_eval_batches=1',
            f'--config.num_train_steps={steps}', '--config.log_every_steps=1',
            '--config.eval_every_steps=1000', '--config.checkpoint_every_steps=1000']


def _error_lines(out: subprocess.CompletedProcess) -> list[str]:
    """stderr of a failed command, which must be the short report, not a traceback."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'Traceback' not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and '--verbose' in lines[1], out.stderr
    return lines


def _tree(directory) -> list[str]:
    """Every file under `directory` with its size: equal before and after = left untouched."""
    return sorted(f'{os.path.relpath(os.path.join(d, n), directory)}:'
                  f'{os.path.getsize(os.path.join(d, n))}'
                  for d, _, names in os.walk(directory) for n in names)


def _leftovers(parent) -> list[str]:
    return [n for n in os.listdir(parent) if '.partial-' in n]


@pytest.fixture(scope='module')
def spm_model(tmp_path_factory):
    """A SentencePiece model trained by jaxlm (pad 0, eos 1, bos 2), as LLaMA 2 / Mistral ship."""
    rng = random.Random(0)
    words = ' '.join(TEXTS).split()
    docs = [' '.join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(300)]
    return str(train_sentencepiece(docs, VOCAB, tmp_path_factory.mktemp('cache')))


@pytest.fixture(scope='module')
def spm_hf(spm_model, tmp_path_factory):
    """A tiny LLaMA folder whose only tokenizer is tokenizer.model, ids as in its config."""
    hf_dir = str(tmp_path_factory.mktemp('hf') / 'llama')
    tok = SentencePieceTokenizer(spm_model)
    model = _hf_model('llama', VOCAB)
    ids = dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    model.config.update(ids)
    model.generation_config.update(**ids)
    model.save_pretrained(hf_dir, safe_serialization=True)
    shutil.copyfile(spm_model, os.path.join(hf_dir, 'tokenizer.model'))
    return hf_dir


def test_readme_finetune_of_sentencepiece_model_runs_and_resumes(spm_hf, shared_data_dir,
                                                                  tmp_path):
    """The README's commands: convert, then train on the converted run's own config (which
    used to fail copying the run's tokenizer.model onto itself); again, it resumes."""
    run = str(tmp_path / 'run')
    out = _run('jaxlm.convert', '--from-hf', spm_hf, '--workdir', run)
    assert out.returncode == 0, out.stderr
    train = ('jaxlm.train', '--config', f'{run}/config.py', f'--workdir={run}')
    out = _run(*train, *_train_args(shared_data_dir, 2))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'initialised parameters from {run}/params (step 0)' in out.stdout
    assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == ['2']
    out = _run(*train, *_train_args(shared_data_dir, 3))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'resumed from {run}/checkpoints/2' in out.stdout
    assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == ['2', '3']


def test_from_hf_into_existing_run_needs_overwrite(spm_hf, tmp_path):
    run = str(tmp_path / 'run')
    assert _run('jaxlm.convert', '--from-hf', spm_hf, '--workdir', run).returncode == 0
    os.makedirs(os.path.join(run, 'checkpoints', '5'))  # the run was fine-tuned since
    with open(os.path.join(run, 'checkpoints', '5', 'state'), 'w') as f:
        f.write('old')
    before = _tree(run)

    error = _error_lines(_run('jaxlm.convert', '--from-hf', spm_hf, '--workdir', run))[0]
    assert run in error and '--overwrite' in error
    assert _tree(run) == before

    # A conversion failing halfway (the last tensor is wrong) keeps the old run.
    broken = str(tmp_path / 'broken')
    shutil.copytree(spm_hf, broken)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(os.path.join(broken, 'model.safetensors'))
    tensors['lm_head.weight'] = tensors['lm_head.weight'][:-1]
    save_file(tensors, os.path.join(broken, 'model.safetensors'))
    error = _error_lines(_run('jaxlm.convert', '--from-hf', broken, '--workdir', run,
                              '--overwrite'))[0]
    assert "'lm_head.weight': expected shape" in error
    assert _tree(run) == before and not _leftovers(tmp_path)

    out = _run('jaxlm.convert', '--from-hf', spm_hf, '--workdir', run, '--overwrite')
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(run)) == RUN_FILES  # no checkpoints of the old run
    assert not _leftovers(tmp_path)


def _fail_after(count: int, tensors):
    for i, item in enumerate(tensors):
        if i == count:
            raise OSError(28, 'No space left on device')
        yield item


def test_to_hf_into_existing_folder_needs_overwrite(spm_hf, tmp_path, monkeypatch):
    run, out_dir = str(tmp_path / 'run'), str(tmp_path / 'export')
    hf_lib.from_hf(spm_hf, run)
    export = ('jaxlm.convert', '--to-hf', out_dir, '--workdir', run)
    out = _run(*export, '--max-shard-gb', '0.00002')  # 21 kB shards
    assert out.returncode == 0, out.stderr
    assert len(glob.glob(os.path.join(out_dir, 'model-*-of-*.safetensors'))) >= 3
    before = _tree(out_dir)

    error = _error_lines(_run(*export))[0]
    assert out_dir in error and '--overwrite' in error
    assert _tree(out_dir) == before

    # An export failing halfway (after its first shards) keeps the old folder.
    iter_tensors = hf_lib._iter_hf_tensors

    def failing(*args):
        return _fail_after(8, iter_tensors(*args))

    monkeypatch.setattr(hf_lib, '_iter_hf_tensors', failing)
    with pytest.raises(OSError, match='No space left'):
        hf_lib.to_hf(run, out_dir, max_shard_bytes=20_000, overwrite=True)
    monkeypatch.undo()
    assert _tree(out_dir) == before and not _leftovers(tmp_path)

    out = _run(*export, '--overwrite')  # one file now: the old shards and index are gone
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(out_dir)) == ['config.json', 'generation_config.json',
                                           'model.safetensors', 'tokenizer.model']
    assert not _leftovers(tmp_path)
    transformers.LlamaForCausalLM.from_pretrained(out_dir)


def _eos_wins(eos_id: int, module, inputs, logits):
    """Forward hook on lm_head: EOS becomes the argmax at every position."""
    logits = logits.clone()
    logits[..., eos_id] = logits.max() + 10.0
    return logits


def test_to_hf_of_jaxlm_run_generates_until_tokenizer_eos(spm_model, shared_data_dir, tmp_path):
    """A run trained by jaxlm (its SentencePiece has eos 1, bos 2, pad 0, not transformers'
    LLaMA defaults bos 1, eos 2) exports those ids, so HF `generate` stops at its EOS."""
    run, out_dir = str(tmp_path / 'run'), str(tmp_path / 'export')
    out = _run('jaxlm.train', '--config', 'experiments/tiny.py', f'--workdir={run}',
               '--config.model.num_layers=1', f'--config.model.vocab_size={VOCAB}',
               f'--config.data.tokenizer.vocab_size={VOCAB}',
               f'--config.data.tokenizer.path={spm_model}', *_train_args(shared_data_dir, 1))
    assert out.returncode == 0, out.stdout + out.stderr
    out = _run('jaxlm.convert', '--to-hf', out_dir, '--workdir', run)
    assert out.returncode == 0, out.stderr

    tok = SentencePieceTokenizer(os.path.join(run, 'tokenizer.model'))
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
    ids = (tok.bos_id, tok.eos_id, tok.pad_id)
    assert (model.config.bos_token_id, model.config.eos_token_id,
            model.config.pad_token_id) == ids
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == ids
    with open(os.path.join(out_dir, 'generation_config.json')) as f:
        assert json.load(f)['eos_token_id'] == tok.eos_id

    model.lm_head.register_forward_hook(functools.partial(_eos_wins, tok.eos_id))
    prompt = [tok.bos_id, *tok.encode('To be, or not')]
    with torch.no_grad():
        tokens = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=8)
    assert tokens[0].tolist() == prompt + [tok.eos_id]


def test_errors_name_the_file_in_two_lines(spm_hf, tmp_path):
    garbage = tmp_path / 'garbage'
    shutil.copytree(spm_hf, garbage)
    (garbage / 'model.safetensors').write_bytes(np.random.default_rng(0).bytes(4096))
    run = tmp_path / 'run'
    error = _error_lines(_run('jaxlm.convert', '--from-hf', str(garbage), '--workdir',
                              str(run)))[0]
    assert f'{garbage}/model.safetensors is not a readable safetensors file' in error
    assert not run.exists() and not _leftovers(tmp_path)

    from jaxlm.config import default_config

    untrained = tmp_path / 'untrained'  # a run that stopped before its first checkpoint
    untrained.mkdir()
    (untrained / 'config.json').write_text(default_config().to_json_best_effort())
    error = _error_lines(_run('jaxlm.convert', '--to-hf', str(tmp_path / 'out'), '--workdir',
                              str(untrained)))[0]
    assert f'{untrained} has nothing to export: no checkpoint in {untrained}/checkpoints' in error

    error = _error_lines(_run('jaxlm.convert', '--to-hf', str(tmp_path / 'out'), '--workdir',
                              str(garbage)))[0]
    assert f'{garbage} has nothing to export' in error  # an HF folder is not a jaxlm run
    assert not (tmp_path / 'out').exists()
