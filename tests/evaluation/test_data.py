"""Loaders skip malformed records and report them by file:line; missing files name the path."""

import logging

import pytest
from eval_fixtures import make_bench_dir, write_jsonl

from jaxlm.evaluation.registry import get_task


def test_jsonl_malformed_records_reported_by_line(tmp_path, caplog):
    root = make_bench_dir(tmp_path)
    path = root / 'icl_eval_tasks' / 'arc_easy.jsonl'
    good = {'query': 'Question: ok?', 'choices': ['a', 'b'], 'gold': 1}
    write_jsonl(path, [good, '{"query": "Question: broken', {'choices': ['a'], 'gold': 0},
                       {**good, 'gold': 2}, {**good, 'gold': True}, [1, 2], '', good])
    with caplog.at_level(logging.WARNING):
        docs = get_task('arc_easy').docs(root)
    assert docs == [good, good]
    [message] = [r.getMessage() for r in caplog.records]
    assert 'skipped 6 malformed record(s)' in message
    for line, reason in [(2, 'bad JSON'), (3, "missing field 'query'"),
                         (4, 'gold=2 out of range for 2 choices'), (5, "field 'gold' is bool"),
                         (6, 'not a JSON object')]:
        assert f'{path}:{line}: {reason}' in message


def test_mmlu_csv_rows_reported_by_first_line(tmp_path, caplog):
    root = make_bench_dir(tmp_path)
    path = root / 'mmlu' / 'val' / 'high_school_math_val.csv'
    path.write_text('"A question\nover two lines",1,2,3,4,A\nfive,columns,only,here,B\n'
                    'Q,a,b,c,d,E\nQ2,a,b,c,d,C\n')
    with caplog.at_level(logging.WARNING):
        docs = get_task('mmlu').docs(root)
    assert [d['gold'] for d in docs] == [0, 2]
    assert docs[0]['question'] == 'A question\nover two lines'
    message = caplog.records[0].getMessage()
    assert f'{path}:3: 5 columns, expected 6' in message
    assert f"{path}:4: answer 'E' is not one of A-D" in message


def test_hellaswag_bad_label_and_truncated_task(tmp_path, caplog):
    root = make_bench_dir(tmp_path)
    path = root / 'hellaswag' / 'hellaswag_val_first_half.txt'
    path.write_text('Ctx: one.\n7\na\nb\nc\nd\nCtx: Two.\n1\na\nb\nc\nd\nCtx: three.\n0\na\n')
    with caplog.at_level(logging.WARNING):
        docs = get_task('hellaswag').docs(root)
    assert [d['query'] for d in docs] == ['Ctx: Two.']
    message = caplog.records[0].getMessage()
    assert f"{path}:2: gold '7' is not an index 0..3" in message
    assert f'{path}:13: incomplete task (3 of 6 lines)' in message


def test_missing_file_names_path_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv('JAXLM_DATA_DIR', raising=False)
    with pytest.raises(FileNotFoundError, match='JAXLM_DATA_DIR'):
        get_task('piqa').evaluate(object())
    with pytest.raises(FileNotFoundError, match=r'icl_eval_tasks/piqa\.jsonl.*JAXLM_DATA_DIR'):
        get_task('piqa').evaluate(object(), data_dir=tmp_path)


def test_real_files_load_cleanly(shared_data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        counts = {name: len(get_task(name).docs(shared_data_dir))
                  for name in ('hellaswag', 'mmlu', 'arc_easy', 'arc_challenge', 'piqa',
                               'winogrande')}
    assert counts == {'hellaswag': 5021, 'mmlu': 1531, 'arc_easy': 2376, 'arc_challenge': 1172,
                      'piqa': 1838, 'winogrande': 1267}
    assert not caplog.records
