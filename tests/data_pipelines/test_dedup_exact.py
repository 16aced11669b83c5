"""Exact dedup over hash-partitioned bucket files (data_pipelines.dedup.exact)."""

import gzip
import json

import numpy as np
import pytest

from data_pipelines.dedup import ExactDedupConfig, run_exact_dedup
from data_pipelines.dedup.union_find import min_representatives
from data_pipelines.document import Document


def serial_map(fn, items):
    return list(map(fn, items))


def write_shard(path, docs):
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'wt', encoding='utf-8') as f:
        for doc_id, text in docs:
            f.write(json.dumps(Document(doc_id, text).to_json()) + '\n')
    return str(path)


@pytest.fixture
def shards(tmp_path):
    return [
        write_shard(tmp_path / 's0.jsonl', [('a0', 'Hello world'), ('a1', 'unique one'),
                                            ('a2', 'hello   WORLD\n')]),
        write_shard(tmp_path / 's1.jsonl.gz', [('b0', 'unique two'), ('b1', ' Hello world'),
                                               ('b2', 'unique one')]),
        write_shard(tmp_path / 's2.jsonl', []),
        write_shard(tmp_path / 's3.jsonl', [('c0', 'unique two'), ('c1', 'Unique three')]),
    ]


def test_keeps_first_of_each_normalised_text_group(shards, tmp_path):
    results = run_exact_dedup(shards, ExactDedupConfig(num_partitions=3), str(tmp_path / 'w'),
                              serial_map)
    assert list(results) == shards
    assert [r.removed for r in results.values()] == [
        {'a2': 'a0'}, {'b1': 'a0', 'b2': 'a1'}, {}, {'c0': 'b0'}]


def test_normalisation_is_configurable(shards, tmp_path):
    cfg = ExactDedupConfig(lowercase=False, collapse_whitespace=False, num_partitions=2)
    results = run_exact_dedup(shards, cfg, str(tmp_path / 'w'), serial_map)
    assert [r.removed for r in results.values()] == [{}, {'b2': 'a1'}, {}, {'c0': 'b0'}]


def test_partition_count_and_reruns_do_not_change_the_result(shards, tmp_path):
    work = str(tmp_path / 'w')
    expected = run_exact_dedup(shards, ExactDedupConfig(num_partitions=1), work, serial_map)
    for partitions in (2, 7, 2):  # a rerun in the same work_dir must not read stale buckets
        got = run_exact_dedup(shards, ExactDedupConfig(num_partitions=partitions), work,
                              serial_map)
        assert got == expected


def test_bucket_files_hold_only_their_partition(shards, tmp_path):
    work = tmp_path / 'w'
    run_exact_dedup(shards, ExactDedupConfig(num_partitions=4), str(work), serial_map)
    total = 0
    for p in range(4):
        for shard in range(len(shards)):
            records = np.load(work / 'buckets' / f'p{p:05d}' / f's{shard:06d}.npy')
            assert np.all(records['key1'] % 4 == p) and np.all(records['shard'] == shard)
            total += len(records)
    assert total == 8  # one key per document


def test_union_find_keeps_the_smallest_node_of_each_component():
    edges = np.array([[5, 9], [9, 2], [7, 8], [3, 3], [8, 11]], np.int64)
    nodes, reps = min_representatives(edges)
    assert dict(zip(nodes.tolist(), reps.tolist(), strict=True)) == {
        2: 2, 3: 3, 5: 2, 7: 7, 8: 7, 9: 2, 11: 7}


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"id": "x", "text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match='bad.jsonl:2'):
        run_exact_dedup([str(bad)], ExactDedupConfig(), str(tmp_path / 'w'), serial_map)
    with pytest.raises(ValueError, match='num_partitions'):
        run_exact_dedup([str(bad)], ExactDedupConfig(num_partitions=0), str(tmp_path / 'w'),
                        serial_map)


def test_lone_surrogates_are_hashed_not_fatal(tmp_path):
    """A JSON escape can carry a lone surrogate into a document; both dedups still run."""
    from data_pipelines.dedup import MinHashConfig, run_minhash_dedup

    text = 'one two three four five six \udc80 seven'
    shard = write_shard(tmp_path / 's.jsonl', [('x', text), ('y', text.upper()), ('z', 'other')])
    exact = run_exact_dedup([shard], ExactDedupConfig(), str(tmp_path / 'e'), serial_map)
    minhash = run_minhash_dedup([shard], MinHashConfig(), str(tmp_path / 'm'), serial_map)
    assert exact[shard].removed == minhash[shard].removed == {'y': 'x'}
