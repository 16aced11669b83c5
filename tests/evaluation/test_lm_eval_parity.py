"""Parity with lm-evaluation-harness: the harness's OWN task definitions (HellaSwag, MMLU, GSM8K,
included from the installed `lm_eval` package, only the document source replaced by local files;
see harness_tasks/README.md) run through `lm_eval.simple_evaluate` on a jaxlm model via
`JaxLMAdapter`, and the same model through jaxlm's native tasks, must agree document by
document: the same prompts, the same argmax for acc and acc_norm, the same extracted GSM8K
answers, and the same aggregate scores.

A random tiny model is enough: both sides score with the same `JaxLM`, so any difference comes
from prompt construction, few-shot selection, scoring or answer extraction, which is what is
being compared. Offline: HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1 (JAX_NOTES §10).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

lm_eval = pytest.importorskip(
    'lm_eval', reason='lm-evaluation-harness is not installed (pip install -e ".[eval]")')

import yaml  # noqa: E402  (a dependency of lm_eval)
from lm_eval.tasks import TaskManager  # noqa: E402

from jaxlm.data.tokenizers import ByteTokenizer  # noqa: E402
from jaxlm.evaluation.lm import JaxLM  # noqa: E402
from jaxlm.evaluation.lm_eval_adapter import JaxLMAdapter  # noqa: E402
from jaxlm.models.config import ModelConfig  # noqa: E402
from jaxlm.models.decoder import Transformer  # noqa: E402

try:  # the native harness; the comparisons skip (only) while it does not import
    from jaxlm.evaluation.registry import get_task
except ImportError as e:  # pragma: no cover
    get_task = None
    _NATIVE_MISSING = f'jaxlm.evaluation.registry does not import: {e}'
else:
    _NATIVE_MISSING = ''

pytestmark = pytest.mark.slow

TEMPLATES = pathlib.Path(__file__).parent / 'harness_tasks'
LM_EVAL_TASKS = pathlib.Path(lm_eval.__file__).parent / 'tasks'

HELLASWAG_LIMIT = 20
MMLU_SUBJECTS = ('anatomy', 'high_school_geography', 'management')
MMLU_LIMIT = 10  # per subject
MMLU_FEWSHOT = 5
GSM8K_LIMIT = 5
GSM8K_FEWSHOT = 8  # gsm8k_cot's own default
SEQ_LEN = 2048

native = pytest.mark.skipif(get_task is None, reason=_NATIVE_MISSING)


# -- the model --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def jax_lm() -> JaxLM:
    model = Transformer(ModelConfig(
        vocab_size=259, num_layers=1, d_model=32, num_heads=2, num_kv_heads=2, head_dim=16,
        mlp_dim=64, max_seq_len=SEQ_LEN, dtype=jnp.float32))
    params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
    return JaxLM(model, params, ByteTokenizer(), batch_size=16)


# -- local documents in the hub's field layout ------------------------------------------------

def hellaswag_hub_doc(context: str, gold: str, endings: list[str]) -> dict[str, Any]:
    """Rowan/hellaswag fields from the llama.cpp text layout (`activity_label: ctx`, gold,
    endings). The text joins `ctx_a + " " + ctx_b` with ctx_b (the start of the next sentence,
    e.g. "the lady") uncapitalized; ctx_b is taken back as the trailing fragment after the last
    sentence when it starts in lower case, so that the harness's own `process_docs`
    (`ctx_a + " " + ctx_b.capitalize()`) sees what it sees on the hub's rows."""
    label, _, ctx = context.partition(': ')
    head, sep, tail = ctx.rpartition('. ')
    if not sep:
        head, tail = '', ctx
    if tail[:1].islower():
        ctx_a, ctx_b = (head + '.' if sep else ''), tail
    else:
        ctx_a, ctx_b = ctx, ''
    return {'activity_label': label, 'ctx_a': ctx_a, 'ctx_b': ctx_b, 'endings': endings,
            'label': gold}


def write_jsonl(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')


def convert_data(shared: pathlib.Path, out: pathlib.Path) -> None:
    import csv

    lines = (shared / 'hellaswag' / 'hellaswag_val_first_half.txt').read_text(
        encoding='utf-8').splitlines()
    docs = [hellaswag_hub_doc(lines[i], lines[i + 1].strip(), lines[i + 2:i + 6])
            for i in range(0, 6 * HELLASWAG_LIMIT, 6)]
    write_jsonl(out / 'hellaswag_validation.jsonl', docs)
    for subject in MMLU_SUBJECTS:  # cais/mmlu fields: question, subject, choices, answer (int)
        for split, name in (('val', 'test'), ('dev', 'dev')):
            with open(shared / 'mmlu' / split / f'{subject}_{split}.csv', encoding='utf-8',
                      newline='') as f:
                rows = [{'question': r[0], 'subject': subject, 'choices': r[1:5],
                         'answer': 'ABCD'.index(r[5].strip())} for r in csv.reader(f)]
            write_jsonl(out / f'mmlu_{subject}_{name}.jsonl', rows)


def write_task_configs(shared: pathlib.Path, data: pathlib.Path, out: pathlib.Path,
                       cache: pathlib.Path) -> None:
    def fill(template: str, **extra: str) -> str:
        text = (TEMPLATES / template).read_text()
        for key, value in {'LM_EVAL_TASKS': str(LM_EVAL_TASKS), 'DATA': str(data),
                           'SHARED': str(shared), 'CACHE': str(cache), **extra}.items():
            text = text.replace(f'@{key}@', value)
        return text

    (out / 'hellaswag.yaml').write_text(fill('hellaswag.yaml'))
    (out / 'gsm8k_cot.yaml').write_text(fill('gsm8k_cot.yaml'))
    for subject in MMLU_SUBJECTS:
        (out / f'mmlu_{subject}.yaml').write_text(fill('mmlu_subject.yaml', SUBJECT=subject))
    # The harness's mmlu group aggregation (`_mmlu.yaml`): acc weighted by subject size.
    (out / 'mmlu_group.yaml').write_text(yaml.safe_dump({
        'group': 'jaxlm_parity_mmlu',
        'task': [f'jaxlm_parity_mmlu_{s}' for s in MMLU_SUBJECTS],
        'aggregate_metric_list': [{'metric': 'acc', 'weight_by_size': True}],
        'metadata': {'version': 2}}))


@pytest.fixture(scope='module')
def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ.get(
        'JAXLM_DATA_DIR', pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'data'))
    if not (path / 'hellaswag').is_dir():
        if os.environ.get('CI'):
            pytest.fail(f'shared data dir {path} not found in CI; set JAXLM_DATA_DIR')
        pytest.skip(f'shared data dir {path} not found; set JAXLM_DATA_DIR')
    return path


@pytest.fixture(scope='module')
def task_manager(data_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> TaskManager:
    root = tmp_path_factory.mktemp('lm_eval_parity')
    for sub in ('data', 'tasks', 'cache'):
        (root / sub).mkdir()
    convert_data(data_dir, root / 'data')
    write_task_configs(data_dir, root / 'data', root / 'tasks', root / 'cache')
    return TaskManager(include_path=str(root / 'tasks'), include_defaults=False)


# -- harness runs ----------------------------------------------------------------------------

def run_harness(adapter: JaxLMAdapter, tm: TaskManager, tasks: list[str], *, limit: int,
                num_fewshot: int) -> dict[str, Any]:
    out = lm_eval.simple_evaluate(model=adapter, tasks=tasks, task_manager=tm, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=True, bootstrap_iters=0,
                                  random_seed=0, numpy_random_seed=1234,
                                  torch_random_seed=1234, fewshot_random_seed=1234)
    assert out is not None
    return out


@pytest.fixture(scope='module')
def adapter(jax_lm: JaxLM) -> JaxLMAdapter:
    # Neither side's gsm8k_cot config sets max_gen_toks: both use 256, the harness's default.
    return JaxLMAdapter(lm=jax_lm)


@pytest.fixture(scope='module')
def hellaswag_run(adapter: JaxLMAdapter, task_manager: TaskManager) -> dict[str, Any]:
    return run_harness(adapter, task_manager, ['jaxlm_parity_hellaswag'],
                       limit=HELLASWAG_LIMIT, num_fewshot=0)


@pytest.fixture(scope='module')
def mmlu_run(adapter: JaxLMAdapter, task_manager: TaskManager) -> dict[str, Any]:
    return run_harness(adapter, task_manager, ['jaxlm_parity_mmlu'], limit=MMLU_LIMIT,
                       num_fewshot=MMLU_FEWSHOT)


@pytest.fixture(scope='module')
def gsm8k_run(adapter: JaxLMAdapter, task_manager: TaskManager) -> dict[str, Any]:
    return run_harness(adapter, task_manager, ['jaxlm_parity_gsm8k_cot'], limit=GSM8K_LIMIT,
                       num_fewshot=GSM8K_FEWSHOT)


def mc_decisions(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per document (by doc_id): the harness's argmax for acc and acc_norm, recomputed from the
    logged log-likelihoods exactly as `ConfigurableTask.process_results` does, and checked
    against the harness's own per-document acc/acc_norm."""
    out = []
    for s in sorted(samples, key=lambda s: s['doc_id']):
        lls = np.array([r[0] for r in s['filtered_resps']], np.float64)
        conts = [a[1] for a in s['arguments']]
        assert all(c.startswith(' ') for c in conts)  # target_delimiter " "
        lengths = np.array([float(len(c[1:])) for c in conts])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
        gold = int(s['target'])
        assert s['acc'] == float(pred == gold)
        if 'acc_norm' in s:
            assert s['acc_norm'] == float(pred_norm == gold)
        out.append({'doc_id': s['doc_id'], 'gold': gold, 'pred': pred, 'pred_norm': pred_norm,
                    'lls': lls.tolist(), 'arguments': [tuple(a) for a in s['arguments']]})
    return out


# -- the adapter itself ----------------------------------------------------------------------

def test_adapter_loglikelihoods_equal_jaxlm(hellaswag_run: dict[str, Any],
                                            jax_lm: JaxLM) -> None:
    samples = hellaswag_run['samples']['jaxlm_parity_hellaswag']
    assert len(samples) == HELLASWAG_LIMIT
    args = [tuple(a) for s in samples for a in s['arguments']]
    logged = [tuple(r[0]) for s in samples for r in s['resps']]
    direct = jax_lm.loglikelihood(args)
    assert [(float(ll), bool(g)) for ll, g in logged] == direct


def test_adapter_rolling_and_generate_equal_jaxlm(adapter: JaxLMAdapter, jax_lm: JaxLM) -> None:
    from lm_eval.api.instance import Instance

    texts = ['Hello world.', 'The quick brown fox jumps over the lazy dog. ' * 3]
    reqs = [Instance('loglikelihood_rolling', {}, (t,), i) for i, t in enumerate(texts)]
    assert adapter.loglikelihood_rolling(reqs) == jax_lm.loglikelihood_rolling(texts)
    gen = [Instance('generate_until', {}, ('Question: 1+1?\nAnswer:',
                                           {'until': ['\n'], 'max_gen_toks': 8,
                                            'do_sample': False}), 0),
           Instance('generate_until', {}, ('Q:', {'until': 'x', 'max_new_tokens': 5}), 1)]
    expected = jax_lm.generate_until([
        ('Question: 1+1?\nAnswer:', {'until': ['\n'], 'max_gen_toks': 8, 'temperature': 0.0}),
        ('Q:', {'until': ['x'], 'max_gen_toks': 5, 'temperature': 0.0})])
    assert adapter.generate_until(gen) == expected


def test_adapter_registered_and_argument_checks(jax_lm: JaxLM) -> None:
    from lm_eval.api.registry import get_model

    assert get_model('jaxlm') is JaxLMAdapter
    with pytest.raises(ValueError, match='exactly one'):
        JaxLMAdapter()
    with pytest.raises(ValueError, match='exactly one'):
        JaxLMAdapter('some/dir', lm=jax_lm)


# -- parity with the native tasks ------------------------------------------------------------

def assert_mc_parity(harness: list[dict[str, Any]], native_docs: list[dict[str, Any]],
                     what: str) -> None:
    assert len(harness) == len(native_docs), what
    mismatches = [(h['doc_id'], (h['pred'], h['pred_norm']), (n['pred'], n['pred_norm']))
                  for h, n in zip(harness, native_docs, strict=True)
                  if (h['gold'], h['pred'], h['pred_norm']) != (n['gold'], n['pred'],
                                                                 n['pred_norm'])]
    assert not mismatches, f'{what}: (doc_id, harness (pred, pred_norm), native): {mismatches}'


@native
def test_hellaswag_parity(hellaswag_run: dict[str, Any], jax_lm: JaxLM,
                          data_dir: pathlib.Path) -> None:
    harness = mc_decisions(hellaswag_run['samples']['jaxlm_parity_hellaswag'])
    task = get_task('hellaswag')
    result = task.evaluate(jax_lm, data_dir=data_dir, num_fewshot=0, limit=HELLASWAG_LIMIT)
    # The same prompts and continuations, request by request.
    docs = task.docs(data_dir)[:HELLASWAG_LIMIT]
    assert [h['arguments'] for h in harness] == [task.requests(d, []) for d in docs]
    assert_mc_parity(harness, result.per_doc, 'hellaswag')
    metrics = hellaswag_run['results']['jaxlm_parity_hellaswag']
    assert result.metrics['acc'] == pytest.approx(metrics['acc,none'], abs=1e-12)
    assert result.metrics['acc_norm'] == pytest.approx(metrics['acc_norm,none'], abs=1e-12)


@pytest.fixture(scope='module')
def mmlu_data_dir(data_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> pathlib.Path:
    """A data dir holding only the tested subjects (links to the shared files), so the native
    task evaluates the same subjects as the harness run."""
    root = tmp_path_factory.mktemp('mmlu_subset')
    for split in ('val', 'dev'):
        (root / 'mmlu' / split).mkdir(parents=True)
        for subject in MMLU_SUBJECTS:
            name = f'{subject}_{split}.csv'
            (root / 'mmlu' / split / name).symlink_to(data_dir / 'mmlu' / split / name)
    return root


@native
def test_mmlu_parity(mmlu_run: dict[str, Any], jax_lm: JaxLM,
                     mmlu_data_dir: pathlib.Path) -> None:
    task = get_task('mmlu')
    result = task.evaluate(jax_lm, data_dir=mmlu_data_dir, num_fewshot=MMLU_FEWSHOT,
                           limit=MMLU_LIMIT)
    assert {d['subject'] for d in result.per_doc} == set(MMLU_SUBJECTS)
    native_docs = task.limit_docs(task.docs(mmlu_data_dir), MMLU_LIMIT)
    for subject in MMLU_SUBJECTS:
        name = f'jaxlm_parity_mmlu_{subject}'
        harness = mc_decisions(mmlu_run['samples'][name])
        assert len(harness) == MMLU_LIMIT
        mine = [d for d in result.per_doc if d['subject'] == subject]
        docs = [d for d in native_docs if d['subject'] == subject]
        # Prompts: description, 5 solved dev examples, the question; continuations " A".." D".
        assert [h['arguments'] for h in harness] == [
            task.requests(d, task.fewshot_docs(mmlu_data_dir, [], d, MMLU_FEWSHOT))
            for d in docs], subject
        assert_mc_parity(harness, mine, f'mmlu {subject}')
        assert result.metrics[f'acc/{subject}'] == pytest.approx(
            mmlu_run['results'][name]['acc,none'], abs=1e-12)
    # The group score: acc weighted by subject size (the harness's `mmlu` aggregation).
    assert result.metrics['acc'] == pytest.approx(
        mmlu_run['results']['jaxlm_parity_mmlu']['acc,none'], abs=1e-12)


def assert_gsm8k_parity(run: dict[str, Any], lm: Any, data_dir: pathlib.Path) -> None:
    samples = run['samples']['jaxlm_parity_gsm8k_cot']
    by_filter: dict[str, dict[int, dict[str, Any]]] = {}
    for s in samples:
        by_filter.setdefault(s['filter'], {})[s['doc_id']] = s
    assert set(by_filter) == {'strict-match', 'flexible-extract'}
    strict, flexible = by_filter['strict-match'], by_filter['flexible-extract']
    assert sorted(strict) == list(range(GSM8K_LIMIT))

    result = get_task('gsm8k').evaluate(lm, data_dir=data_dir, num_fewshot=GSM8K_FEWSHOT,
                                        limit=GSM8K_LIMIT)
    assert len(result.per_doc) == GSM8K_LIMIT
    mismatches = []
    for n in result.per_doc:
        st, fl = strict[n['doc_id']], flexible[n['doc_id']]
        (context, _), = [tuple(a) for a in st['arguments']]
        assert context == gsm8k_prompt(n['doc_id'], data_dir)
        assert st['target'] == n['gold']
        harness = (st['resps'][0][0], st['filtered_resps'][0], fl['filtered_resps'][0],
                   st['exact_match'], fl['exact_match'])
        ours = (n['response'], n['strict_answer'], n['flexible_answer'],
                n['exact_match_strict'], n['exact_match_flexible'])
        if harness != ours:
            mismatches.append((n['doc_id'], harness, ours))
    assert not mismatches, f'(doc_id, harness, native): {mismatches}'
    metrics = run['results']['jaxlm_parity_gsm8k_cot']
    assert result.metrics['exact_match_strict'] == pytest.approx(
        metrics['exact_match,strict-match'], abs=1e-12)
    assert result.metrics['exact_match_flexible'] == pytest.approx(
        metrics['exact_match,flexible-extract'], abs=1e-12)


def gsm8k_prompt(doc_id: int, data_dir: pathlib.Path) -> str:
    from jaxlm.evaluation.tasks import gsm8k

    doc = gsm8k.Gsm8k().docs(data_dir)[doc_id]
    return gsm8k.prompt(doc['question'], GSM8K_FEWSHOT)


@native
def test_gsm8k_cot_parity(gsm8k_run: dict[str, Any], jax_lm: JaxLM,
                          data_dir: pathlib.Path) -> None:
    assert_gsm8k_parity(gsm8k_run, jax_lm, data_dir)


class ScriptedLM:
    """Answers each GSM8K question with a fixed response, so that answer extraction and
    exact_match are compared on right, wrong and malformed answers (a random model's output
    is all '[invalid]' or wrong). Cuts at the stop strings as JaxLM does."""

    max_length = SEQ_LEN

    def __init__(self, questions: list[str], responses: list[str]) -> None:
        self.script = list(zip(questions, responses, strict=True))

    def generate_until(self, requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
        out = []
        for context, kwargs in requests:
            tail = context.rsplit('Q: ', 1)[-1]
            (text,) = [r for q, r in self.script if tail.startswith(q)]
            for stop in kwargs.get('until') or []:
                if stop in text:
                    text = text[:text.index(stop)]
            out.append(text)
        return out

    def generate_until_truncated(self, requests: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        return [False] * len(requests)


# Golds of the first five test problems: 18, 3, 70000, 540, 20.
SCRIPTED_RESPONSES = [
    'She makes 9 * 2 = $18 every day. The answer is 18.\n\nQ: and then 99',  # right, both
    'It takes 3 bolts. The answer is 3',  # no trailing char: strict misses, flexible right
    'He made a profit of $70,000. The answer is 70,000.',  # "," ignored: right
    'The answer is $540.',  # "$" breaks strict; flexible "$540." -> 540
    'the answer is 20. Or maybe 21',  # strict is case-sensitive: invalid; flexible takes 21
]


@native
def test_gsm8k_cot_scoring_parity(task_manager: TaskManager, data_dir: pathlib.Path) -> None:
    from jaxlm.evaluation.tasks import gsm8k

    docs = gsm8k.Gsm8k().docs(data_dir)[:GSM8K_LIMIT]
    lm = ScriptedLM([d['question'] for d in docs], SCRIPTED_RESPONSES)
    run = run_harness(JaxLMAdapter(lm=lm), task_manager, ['jaxlm_parity_gsm8k_cot'],
                      limit=GSM8K_LIMIT, num_fewshot=GSM8K_FEWSHOT)
    metrics = run['results']['jaxlm_parity_gsm8k_cot']
    assert metrics['exact_match,strict-match'] == pytest.approx(2 / 5)
    assert metrics['exact_match,flexible-extract'] == pytest.approx(4 / 5)
    assert_gsm8k_parity(run, lm, data_dir)
