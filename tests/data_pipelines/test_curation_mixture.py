"""Mixture weights: deterministic up- and down-sampling by document id."""

import json

import pytest

from data_pipelines import mixture
from data_pipelines.document import Document
from data_pipelines.readers import read_file


def test_weights_scale_document_counts_deterministically():
    ids = [f'doc-{i}' for i in range(4000)]
    for weight, low, high in ((0.25, 900, 1100), (1.0, 4000, 4000), (2.5, 9800, 10200)):
        total = sum(mixture.copies(i, weight, seed=0) for i in ids)
        assert low <= total <= high, (weight, total)
    assert [mixture.copies(i, 0.5, 0) for i in ids[:50]] == [mixture.copies(i, 0.5, 0)
                                                              for i in ids[:50]]
    assert [mixture.copies(i, 0.5, 0) for i in ids[:50]] != [mixture.copies(i, 0.5, 1)
                                                              for i in ids[:50]]
    assert sum(mixture.copies(i, 0.0, 0) for i in ids) == 0


def test_copies_keep_provenance():
    doc = Document('s/1', 'text', {'source': 's'})
    out = mixture.sample(doc, 3.0, seed=0)
    assert [d.id for d in out] == ['s/1', 's/1#1', 's/1#2']
    assert out[0] is doc and out[2].metadata == {'source': 's', 'copy_of': 's/1'}
    with pytest.raises(ValueError, match='weight'):
        mixture.copies('x', -1.0, 0)


def test_copies_never_take_a_real_id(tmp_path):
    # A real id of the old copy form `<id>#<k>`: the copies of `page` used to be `.../page#1`.
    ids = ['page', 'page#1', 'page%231', '50%']
    path = tmp_path / 'd.jsonl'
    path.write_text(''.join(json.dumps({'id': i, 'text': 'x'}) + '\n' for i in ids))
    docs = list(read_file(str(path), source='s', licence='CC0', fmt='jsonl', rel_path='d.jsonl',
                          id_field='id'))
    assert [d.id for d in docs] == ['s/d.jsonl/page', 's/d.jsonl/page%231', 's/d.jsonl/page%25231',
                                    's/d.jsonl/50%25']
    out = [copy.id for d in docs for copy in mixture.sample(d, 3.0, seed=0)]
    assert len(out) == 12 and len(set(out)) == 12
    assert 's/d.jsonl/page#1' in out  # a copy of `page`, no longer the id of a real document
