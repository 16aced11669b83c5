"""The curation pipeline over adversarial input: every record is accounted for, stage by stage,
removed documents are written per reason, reruns skip finished shards and redo failed ones."""

import gzip
import json
import os
import shutil

import pytest
from curation_fixtures import curation_config, write_inputs

from data_pipelines import pipeline
from data_pipelines.executors.local import LocalExecutor
from jaxlm.config import ConfigError

# Stage -> removal reasons and counts, fixed by construction of curation_fixtures.write_inputs.
EXPECTED = {
    'read': {'malformed_json': 3, 'missing_text_field': 3, 'truncated_or_corrupt_stream': 2,
             'unreadable_file': 1, 'duplicate_id': 1},
    'normalize': {'empty': 2, 'invalid_utf8': 1, 'too_long': 1},
    'language': {'language_fr': 1},
    'gopher_repetition': {'duplicated_5_n_grams': 1},  # the 140 kB single line
    'gopher_quality': {}, 'c4': {}, 'fineweb': {},
    'bad_words': {'document_removed_with_badwords': 1},
    'toxicity': {'toxic': 1},
    'pii': {},
    'decontamination': {'contaminated_gsm8k': 1},
    'exact_dedup': {'duplicate': 2},
    'minhash_dedup': {'duplicate': 3},
    'mixture': {'downsampled': 1},
}
CURATED = ['table/table.parquet/p0', 'table/table.parquet/p0#1', 'web/complete.jsonl.zst:0',
           'web/bad.jsonl:7', 'web/good.jsonl.gz:1', 'web/good.jsonl.gz:2']


def _read_gz(path):
    with gzip.open(path, 'rt') as f:
        return [json.loads(line) for line in f]


def _comparable(stats):
    return [{k: v for k, v in st.items() if k != 'seconds'} for st in stats['stages']]


@pytest.fixture(scope='module')
def inputs(shared_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp('curation')
    expected = write_inputs(root / 'in', shared_data_dir)
    return root, expected


@pytest.fixture(scope='module')
def clean_run(inputs, shared_data_dir):
    root, _ = inputs
    config = curation_config(root / 'in', shared_data_dir)
    out = root / 'clean'
    return out, pipeline.run(config, str(out), LocalExecutor(1))


def test_every_record_ends_in_exactly_one_place(inputs, clean_run):
    (_, expected), (out, stats) = inputs, clean_run
    stages = stats['stages']
    assert [s['name'] for s in stages] == list(EXPECTED)
    assert stages[0]['read'] == expected['records']
    for prev, st in zip([None, *stages], stages, strict=False):
        assert st['kept'] + st['removed'] == st['read'], st['name']
        assert st['reasons'] == EXPECTED[st['name']], st['name']
        if prev is not None:
            assert st['read'] == prev['kept'], st['name']

    # Removed documents on disk: one file per (stage, reason, shard), as many as counted.
    removed_ids = []
    for st in stages:
        for reason, n in st['reasons'].items():
            folder = out / 'removed' / st['name'] / reason
            records = [r for f in sorted(folder.iterdir()) for r in _read_gz(f)]
            assert len(records) == n and {r['reason'] for r in records} == {reason}
            removed_ids += [r['id'] for r in records]
            assert len(st['examples'][reason]) == min(n, 3)
    curated = [r for f in sorted((out / 'curated').iterdir()) for r in _read_gz(f)]
    assert sorted(r['id'] for r in curated) == sorted(CURATED)
    originals = [r['id'] for r in curated if 'copy_of' not in r['metadata']]
    # Read ids are unique, and each is either removed once or kept (ignoring mixture copies).
    assert len(set(removed_ids)) == len(removed_ids)
    assert not set(removed_ids) & set(originals)
    assert len(removed_ids) + len(originals) == expected['records']

    by_id = {r['id']: r for r in curated}
    pii_doc = by_id['web/good.jsonl.gz:1']
    assert '<EMAIL_ADDRESS>' in pii_doc['text'] and '<PHONE_NUMBER>' in pii_doc['text']
    assert '<IP_ADDRESS>' in pii_doc['text'] and '192.168.1.20' in pii_doc['text']
    assert 'jane.doe@example.org' not in pii_doc['text']
    assert pii_doc['metadata']['pii_redactions'] == {'email': 1, 'phone': 1, 'ip': 1}
    assert stages[9]['counters'] == {'email': 1, 'phone': 1, 'ip': 1}
    repaired = by_id['web/bad.jsonl:7']
    assert 'compost and' in repaired['text'] and repaired['metadata']['invalid_utf8_removed'] == 1
    assert by_id['table/table.parquet/p0']['metadata'] == {
        'source': 'table', 'licence': 'test-licence-B', 'path': 'table.parquet', 'index': 0,
        'language': 'en', 'language_score': pytest.approx(1.0, abs=0.01),
        'toxicity': 0.1}
    assert by_id['table/table.parquet/p0#1']['metadata']['copy_of'] == 'table/table.parquet/p0'

    duplicates = _read_gz(out / 'removed' / 'exact_dedup' / 'duplicate' / 'web-00004.jsonl.gz')
    assert duplicates[0]['id'] == 'web/truncated.jsonl.gz:0'
    assert duplicates[0]['metadata']['duplicate_of'] == 'web/good.jsonl.gz:0'

    assert stats['sources']['table']['curated_documents'] == 2
    assert stats['sources']['notes']['curated_documents'] == 0
    assert stats['tokens']['documents'] == len(CURATED)
    assert os.path.exists(stats['tokens']['tokenizer_path'])
    assert json.loads((out / 'stats.json').read_text())['stages'] == json.loads(
        json.dumps(stats['stages']))
    sheet = (out / 'DATASHEET.md').read_text()
    for section in ('## Motivation', '## Composition', '## Collection process',
                    '## Preprocessing and cleaning', '### Decontamination', '## Tokenizer',
                    '## Uses', '## Distribution', '## Maintenance', 'test-licence-B',
                    '| gsm8k | 50 | 1 |', 'bytes_per_token', '### Offensive content',
                    '### Personal information', 'email=1, ip=1, phone=1'):
        assert section in sheet, section
    for field in ('creators', 'contact', 'offensive_content', 'personal_information', 'uses',
                  'not_for', 'maintenance'):  # config.datasheet, each set by the fixture
        assert f'test-{field}' in sheet, field
    assert 'Created by: test-creators-C. Timeframe: test-timeframe-C.' in sheet
    assert 'joined before the stages' in sheet and '**notes**' in sheet  # unwrap_lines is on
    assert '| source | normalize | language |' in sheet  # characters kept per stage and source
    per_source = [s['stage_chars']['c4'] for s in stats['sources'].values()]
    assert [sum(x) for x in zip(*per_source, strict=True)] == [stages[5]['chars_in'],
                                                                stages[5]['chars_out']]


def test_datasheet_counts_records_and_shows_why_a_record_was_rejected(inputs, clean_run):
    (_, expected), (out, stats) = inputs, clean_run
    sheet = (out / 'DATASHEET.md').read_text()
    # Two truncated streams and a broken Parquet file leave a placeholder each: not records.
    records = expected['records'] - 3
    assert sum(s['records_read'] for s in stats['sources'].values()) == records
    assert f'{records} input records from 8 files. 3 files were truncated or unreadable' in sheet
    assert ('`web/truncated.jsonl.gz:1` (error: EOFError: Compressed file ended before the '
            'end-of-stream marker was reached)') in sheet
    assert '`table/broken.parquet:0` (error: ArrowInvalid: Parquet magic bytes' in sheet
    # The rejected Parquet row: its index (in the id) and its columns.
    assert ('`table/table.parquet:1` (error: field \'content\' is NoneType, not a string): '
            '{"content": null, "doc_id": "p1"}') in sheet
    assert ('`table/table.parquet:2` (duplicate_of: table/table.parquet/p0)') in sheet
    assert stats['sources']['table']['repeated_ids'] == 1


def test_rerun_skips_finished_shards_and_redoes_failed_ones(inputs, clean_run, shared_data_dir,
                                                            tmp_path, monkeypatch):
    root, _ = inputs
    config = curation_config(root / 'in', shared_data_dir)
    out = tmp_path / 'out'
    monkeypatch.setenv('CURATION_TEST_FAIL_ON', 'The public library opens')  # the notes shard
    with pytest.raises(pipeline.ShardFailures, match='filter: 1 of 8 shards failed'):
        pipeline.run(config, str(out), LocalExecutor(1))
    assert sorted(os.listdir(out / 'markers' / 'filter')) == sorted(
        f'{s}.json' for s in ('table-00000', 'table-00001', 'web-00000', 'web-00001',
                              'web-00002', 'web-00003', 'web-00004'))

    monkeypatch.delenv('CURATION_TEST_FAIL_ON')
    calls = tmp_path / 'calls.txt'
    monkeypatch.setenv('CURATION_TEST_CALLS', str(calls))
    stats = pipeline.run(config, str(out), LocalExecutor(1))
    # Only the failed shard's document met the classifier again.
    assert calls.read_text().splitlines() == ['The public library opens at nine in the ']
    assert _comparable(stats) == _comparable(clean_run[1])
    calls.unlink()
    shutil.rmtree(out / 'curated')  # outputs of finished passes are not looked at again
    pipeline.run(config, str(out), LocalExecutor(1))
    assert not calls.exists()
    config.stages = config.stages[:-1]
    with pytest.raises(ValueError, match='holds a run of another config'):
        pipeline.run(config, str(out), LocalExecutor(1))


def _jsonl_source_run(root, data_dir, files: dict[str, list[str]], **options):
    """Runs a source of JSONL files with an id field (records `{'id', 'text'}`) through no stage."""
    from data_pipelines.configs import base_config, source

    root.mkdir(parents=True, exist_ok=True)
    for name, ids in files.items():
        (root / name).write_text(''.join(json.dumps({'id': i, 'text': f'text of {name} {i}'}) + '\n'
                                         for i in ids))
    c = base_config()
    c.data_dir = str(data_dir)
    c.sources.src = source(['*.jsonl'], 'jsonl', root=str(root), id_field='id', licence='CC0',
                           **options)
    c.stages = ()
    c.dedup.exact.enabled = c.dedup.minhash.enabled = c.tokenizer.enabled = False
    out = root.parent / '-'.join(f'{k}{v}' for k, v in options.items())
    stats = pipeline.run(c, str(out), LocalExecutor(1))
    curated = sorted(r['id'] for f in sorted((out / 'curated').iterdir()) for r in _read_gz(f))
    removed = sorted((r['id'], r['metadata']['duplicate_of'])
                     for f in (out / 'removed' / 'read' / 'duplicate_id').iterdir()
                     for r in _read_gz(f))
    return stats, curated, removed, (out / 'DATASHEET.md').read_text()


@pytest.mark.parametrize('id_scope', ['file', 'source'])
def test_repeated_ids_are_found_across_shards_and_files(shared_data_dir, tmp_path, id_scope):
    files = {'a.jsonl': ['x', 'y', 'x', 'z', 'y'], 'b.jsonl': ['z', 'w']}
    removed = [('src/a.jsonl:2', 'src/a.jsonl/x'), ('src/a.jsonl:4', 'src/a.jsonl/y')]
    kept = ['src/a.jsonl/x', 'src/a.jsonl/y', 'src/a.jsonl/z', 'src/b.jsonl/w']
    if id_scope == 'file':  # b's `z` is kept, its id names its file, and reported
        kept, shared = sorted([*kept, 'src/b.jsonl/z']), 1
    else:
        removed, shared = [*removed, ('src/b.jsonl:0', 'src/a.jsonl/z')], 0
    for num_shards in (1, 2, 3):
        stats, curated, removed_ids, sheet = _jsonl_source_run(
            tmp_path / 'in', shared_data_dir, files, num_shards=num_shards, id_scope=id_scope)
        # The first of each id in file then record order is kept, however the files are split.
        assert curated == kept and removed_ids == removed
        assert stats['stages'][0]['reasons'] == {'duplicate_id': len(removed)}
        source = stats['sources']['src']
        assert (source['repeated_ids'], source['ids_across_files']) == (len(removed), shared)
        assert f'| src | 2 | 7 | {len(removed)} |' in sheet
        assert ('1 records of **src** share their id with a record of another of its files'
                in sheet) == bool(shared)


def test_config_errors_name_the_field(inputs, shared_data_dir, tmp_path):
    root, _ = inputs
    cases = [
        ('sources.web.format', lambda c: c.sources.web.update(format='csv')),
        ('sources.web.licence', lambda c: c.sources.web.update(licence='')),
        ('config.stages', lambda c: c.update(stages=('normalize', 'gopher'))),
        ('toxicity.classifier', lambda c: c.toxicity.update(classifier='')),
        ('decontamination.benchmarks', lambda c: c.decontamination.update(benchmarks=('x',))),
        ('sources.web: unknown setting', lambda c: c.sources.web.update(text_feild='body')),
        ('sources.web.weight', lambda c: c.sources.web.update(weight=float('inf'))),
        ('sources.web.id_scope', lambda c: c.sources.web.update(id_scope='folder')),
    ]
    for field, change in cases:
        config = curation_config(root / 'in', shared_data_dir)
        change(config)
        with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
            pipeline.run(config, str(tmp_path / field), LocalExecutor(1))
    config = curation_config(root / 'in', shared_data_dir)
    config.sources.web.paths = ('nothing-*.jsonl',)
    with pytest.raises(FileNotFoundError, match=r"config\.sources\.web\.paths: 'nothing-"):
        pipeline.run(config, str(tmp_path / 'missing'), LocalExecutor(1))


def test_shipped_config_answers_every_datasheet_question():
    from data_pipelines.configs import text_corpus_mix

    config = text_corpus_mix.get_config()
    assert all(config.datasheet.values()), config.datasheet
    for name, spec in config.sources.items():
        assert spec.creators and spec.timeframe, name
