"""MinHash LSH dedup: recall/precision on labelled and synthetic near-duplicates, signature
quality against datasketch, and the job's determinism under a process pool."""

import csv
import json
import logging
import math
import multiprocessing
import random
import re

import numpy as np
import pytest

from data_pipelines.dedup import MinHashConfig, run_minhash_dedup
from data_pipelines.dedup import signatures as sig_lib
from data_pipelines.dedup.minhash import document_signatures
from data_pipelines.document import Document

FINEWEB = MinHashConfig.preset('fineweb')


def serial_map(fn, items):
    return list(map(fn, items))


def write_shards(tmp_path, docs, num_shards):
    """Round-robin (id, text) pairs into JSONL shards; returns their paths."""
    paths = [str(tmp_path / f'shard{i}.jsonl') for i in range(num_shards)]
    files = [open(p, 'w') for p in paths]
    for i, (doc_id, text) in enumerate(docs):
        files[i % num_shards].write(json.dumps(Document(doc_id, text).to_json()) + '\n')
    for f in files:
        f.close()
    return paths


def clusters(results):
    """{doc id: kept id} for every removed document of a run."""
    return {k: v for r in results.values() for k, v in r.removed.items()}


def word_shingles(text, n=5):
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a, b):
    sa, sb = word_shingles(a), word_shingles(b)
    return len(sa & sb) / len(sa | sb)


def synthetic_pairs(target, num_pairs, rng, length=200):
    """Pairs (a, b) of random-word documents whose word 5-gram Jaccard is close to `target`:
    b keeps a's first k words and replaces the rest with fresh ones."""
    shingles = length - 4
    shared = round(target * 2 * shingles / (1 + target))  # J = shared / (2 * shingles - shared)
    pairs = []
    for _ in range(num_pairs):
        words = [''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=9)) for _ in range(2 * length)]
        a = words[:length]
        b = words[:shared + 4] + words[length + shared + 4:2 * length]
        pairs.append((' '.join(a), ' '.join(b)))
    return pairs


def test_fineweb_preset_and_validation():
    assert (FINEWEB.shingle, FINEWEB.ngram_size, FINEWEB.num_bands, FINEWEB.rows_per_band) == (
        'word', 5, 14, 8)
    assert MinHashConfig.preset('fineweb', num_partitions=3).num_partitions == 3
    with pytest.raises(ValueError, match='unknown MinHash preset'):
        MinHashConfig.preset('dolma')
    with pytest.raises(ValueError, match='shingle'):
        MinHashConfig(shingle='byte').validate()
    with pytest.raises(ValueError, match='rows_per_band'):
        MinHashConfig(rows_per_band=0).validate()


def test_word_tokens_are_the_regex_tokens():
    texts = ["Hello, World! don't 123 naïve ÉCOLE x  y'z Hello", '', '...', 'hello']
    words = re.findall(r"[a-z0-9']+", texts[0].lower())
    hashes, owner = sig_lib.token_hashes(texts, 'word')
    assert len(words) == 10 and owner.tolist() == [0] * 10 + [3]
    single = np.array([sig_lib.token_hashes([w], 'word')[0][0] for w in words], np.uint64)
    np.testing.assert_array_equal(hashes[:10], single)
    assert hashes[0] == hashes[9] == hashes[10] and len(set(hashes.tolist())) == 9


def test_batched_shingles_equal_per_document_shingles():
    """Shingles never span two documents of a batch, and a document shorter than n tokens
    is one shingle."""
    texts = ['a b c d e f g', '', 'x y', 'a b c d e', 'one two three four five six']
    for shingle in ('word', 'char'):
        values, owner = sig_lib.shingle_hashes(texts, shingle, 5)
        for doc, text in enumerate(texts):
            alone, _ = sig_lib.shingle_hashes([text], shingle, 5)
            np.testing.assert_array_equal(values[owner == doc], alone)
    values, owner = sig_lib.shingle_hashes(texts, 'word', 5)
    assert np.bincount(owner).tolist() == [3, 0, 1, 1, 2]


def test_synthetic_pairs_follow_the_s_curve(tmp_path, caplog):
    """The fraction of pairs deduplicated at each Jaccard level matches 1 - (1 - J^8)^14, and no
    document is ever clustered with one of another pair."""
    rng = random.Random(0)
    num_pairs = 150
    levels = {0.5: [], 0.7: [], 0.8: [], 0.9: []}
    docs = []
    for target in levels:
        for i, (a, b) in enumerate(synthetic_pairs(target, num_pairs, rng)):
            levels[target].append(jaccard(a, b))
            docs += [(f'{target}-{i}-a', a), (f'{target}-{i}-b', b)]
    with caplog.at_level(logging.INFO, logger='data_pipelines.dedup.minhash'):
        removed = clusters(run_minhash_dedup(write_shards(tmp_path, docs, 2), FINEWEB,
                                             str(tmp_path / 'w'), serial_map))
    assert 'J=0.5: 0.053, J=0.7: 0.565, J=0.8: 0.924' in caplog.text
    # a and b land in shards 0 and 1 at the same position: a is the kept one.
    assert all(k.endswith('-b') and v == k[:-1] + 'a' for k, v in removed.items())
    for target, jaccards in levels.items():
        assert abs(np.mean(jaccards) - target) < 0.005
        expected = np.mean([sig_lib.candidate_probability(j, 14, 8) for j in jaccards])
        found = sum(k.startswith(f'{target}-') for k in removed) / num_pairs
        sigma = math.sqrt(expected * (1 - expected) / num_pairs)
        assert abs(found - expected) <= 4 * sigma + 0.01, (target, found, expected)


def test_signature_estimates_match_datasketch_and_truth():
    import datasketch
    rng = random.Random(1)
    pairs = synthetic_pairs(0.6, 40, rng)
    truth = np.array([jaccard(a, b) for a, b in pairs])
    sigs, _ = document_signatures([t for pair in pairs for t in pair], FINEWEB)
    ours = (sigs[0::2] == sigs[1::2]).mean(axis=1)

    def ds_minhash(text):
        m = datasketch.MinHash(num_perm=FINEWEB.num_perm, seed=1)
        m.update_batch([' '.join(s).encode() for s in word_shingles(text)])
        return m
    theirs = np.array([ds_minhash(a).jaccard(ds_minhash(b)) for a, b in pairs])
    # Each estimate is a mean of 112 Bernoulli(J) draws (sd ~0.046); over 40 pairs the bias
    # of both implementations is within 0.02 and their spreads are alike.
    assert abs((ours - truth).mean()) < 0.02 and abs((theirs - truth).mean()) < 0.02
    assert np.abs(ours - truth).mean() < 1.5 * np.abs(theirs - truth).mean() + 0.01


@pytest.fixture(scope='module')
def gutenberg(shared_data_dir):
    root = shared_data_dir / 'near_duplicates'
    with open(root / 'pairs.tsv') as f:
        pairs = list(csv.DictReader(f, delimiter='\t'))
    names = sorted({p['doc_a'] for p in pairs} | {p['doc_b'] for p in pairs})
    return [(n, (root / 'docs' / n).read_text(encoding='utf-8')) for n in names], pairs


def test_recall_and_precision_on_labelled_pairs(gutenberg, tmp_path):
    docs, pairs = gutenberg
    removed = clusters(run_minhash_dedup(write_shards(tmp_path, docs, 3), FINEWEB,
                                         str(tmp_path / 'w'), serial_map))

    def cluster(name):
        return removed.get(name, name)
    predicted = [cluster(p['doc_a']) == cluster(p['doc_b']) for p in pairs]
    positives = [p['label'] == '1' for p in pairs]
    assert not any(pr and not pos for pr, pos in zip(predicted, positives, strict=True))
    # Every positive pair above Jaccard 0.9 (candidate probability > 0.999) is found; the one
    # at 0.50 (Alice, ASCII vs curly quotes) has probability 0.05 and is missed.
    for p, pr in zip(pairs, predicted, strict=True):
        if p['label'] == '1':
            assert pr == (float(p['jaccard_word5gram']) > 0.9), p
    assert sum(predicted) == 12 and sum(positives) == 13


def test_char_shingles_find_typo_variants(tmp_path):
    rng = random.Random(2)
    base = [' '.join(''.join(rng.choices('abcdefghij klmnop', k=400)).split()) for _ in range(20)]
    typo = [t[:100] + 'X' + t[101:300] + 'YZ' + t[302:] for t in base]
    docs = [(f'base{i}', t) for i, t in enumerate(base)] + [(f'typo{i}', t)
                                                           for i, t in enumerate(typo)]
    cfg = MinHashConfig(shingle='char', ngram_size=5, num_partitions=2)
    removed = clusters(run_minhash_dedup(write_shards(tmp_path, docs, 1), cfg,
                                         str(tmp_path / 'w'), serial_map))
    assert removed == {f'typo{i}': f'base{i}' for i in range(20)}


def test_same_result_on_a_process_pool(tmp_path):
    rng = random.Random(3)
    docs = [(f'{i}{s}', t) for i, pair in enumerate(synthetic_pairs(0.85, 30, rng))
            for s, t in zip('ab', pair, strict=True)]
    docs += [('empty', ''), ('punctuation', '!!! ...'), ('short', 'two words')]
    paths = write_shards(tmp_path, docs, 4)
    expected = run_minhash_dedup(paths, FINEWEB, str(tmp_path / 'w1'), serial_map)
    with multiprocessing.get_context('spawn').Pool(2) as pool:
        got = run_minhash_dedup(paths, FINEWEB, str(tmp_path / 'w2'), pool.map)
    assert got == expected
    removed = clusters(got)
    assert 20 < len(removed) < 30 and not {'empty', 'punctuation', 'short'} & set(removed)
