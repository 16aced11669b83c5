"""Keep/drop decisions and reason codes of the quality filters equal datatrove's (0.10.1) on
2,000+ documents of ../shared/data/text_corpus_mix: C4 and Dolma web pages, movie reviews and
book passages. C4's rewritten text (lines removed) must be identical too.

datatrove tokenises every document once per filter (spaCy); here its tokenizer calls are
memoised so the comparison fits the test budget: the same datatrove functions, called once.
"""

import functools
import json

import pytest

from data_pipelines.document import Document
from data_pipelines.filters.c4 import C4QualityFilter
from data_pipelines.filters.fineweb import FineWebQualityFilter
from data_pipelines.filters.gopher_quality import GopherQualityFilter
from data_pipelines.filters.gopher_repetition import GopherRepetitionFilter
from data_pipelines.readers import gutenberg_body, read_file

datatrove = pytest.importorskip('datatrove')
from datatrove.data import Document as DTDocument  # noqa: E402
from datatrove.pipeline import filters as dt  # noqa: E402

BOOKS = ('pg11_alice_in_wonderland.txt', 'pg972_devils_dictionary.txt', 'pg132_art_of_war.txt',
         'pg20866_infantry_drill_regulations.txt', 'pg9198_complete_angler.txt')


def _fixture(corpus) -> list[Document]:
    docs = []
    for name in ('c4_en_train_sample.jsonl', 'c4_en_validation_sample.jsonl',
                 'dolma_cc_en_head-0091.jsonl', 'dolma_cc_en_head-0174.jsonl'):
        docs += read_file(str(corpus / 'web' / name), source='web', licence='', fmt='jsonl',
                          rel_path=name)
    docs += list(read_file(str(corpus / 'reviews' / 'movie_reviews.jsonl'), source='reviews',
                           licence='', fmt='jsonl', rel_path='reviews', num_parts=10))
    for book in BOOKS:  # passages of whole paragraphs: prose, dictionary entries, drill tables
        docs += read_file(str(corpus / 'gutenberg' / book), source='books', licence='',
                          fmt='text', rel_path=book, text_split='chunk', chunk_chars=1500,
                          gutenberg_body=True)
    return docs


@pytest.fixture
def memoised_datatrove(monkeypatch):
    from datatrove.pipeline.filters import (
        c4_filters,
        fineweb_quality_filter,
        gopher_quality_filter,
        gopher_repetition_filter,
    )
    from datatrove.utils import text

    words = functools.lru_cache(maxsize=4)(text.split_into_words)
    sentences = functools.lru_cache(maxsize=100_000)(text.split_into_sentences)
    for module in (gopher_quality_filter, gopher_repetition_filter, fineweb_quality_filter):
        monkeypatch.setattr(module, 'split_into_words', words)
    monkeypatch.setattr(c4_filters, 'split_into_sentences', sentences)


def test_quality_filters_agree_with_datatrove(shared_data_dir, memoised_datatrove):
    docs = _fixture(shared_data_dir / 'text_corpus_mix')
    assert len(docs) >= 2000 and all(isinstance(d, Document) for d in docs)
    pairs = {
        'gopher_repetition': (dt.GopherRepetitionFilter(), GopherRepetitionFilter()),
        'gopher_quality': (dt.GopherQualityFilter(), GopherQualityFilter()),
        'c4': (dt.C4QualityFilter(), C4QualityFilter()),
        'c4_fineweb': (dt.C4QualityFilter(filter_no_terminal_punct=False),
                       C4QualityFilter(filter_no_terminal_punct=False)),
        'fineweb': (dt.FineWebQualityFilter(), FineWebQualityFilter()),
        'gopher_quality_tight': (dt.GopherQualityFilter(min_doc_words=200, min_stop_words=5),
                                 GopherQualityFilter(min_doc_words=200, min_stop_words=5)),
    }
    decisions = {name: {} for name in pairs}
    mismatches = []
    for doc in docs:
        for name, (theirs, ours) in pairs.items():
            dt_doc = DTDocument(text=doc.text, id=doc.id)
            verdict = theirs.filter(dt_doc)
            expected = ('keep', dt_doc.text) if verdict is True else (verdict[1], None)
            out = ours(doc)
            got = ('keep', out.text) if isinstance(out, Document) else (out, None)
            decisions[name][expected[0]] = decisions[name].get(expected[0], 0) + 1
            if got != expected:
                mismatches.append((name, doc.id, expected[0], got[0]))
    assert not mismatches, mismatches[:10]
    # The fixture exercises both outcomes of every filter, and several reasons.
    for name, counts in decisions.items():
        assert counts.get('keep', 0) > 100 and sum(counts.values()) - counts['keep'] > 5, (
            name, counts)
    print(json.dumps(decisions, indent=1))


def test_gutenberg_body_strips_header_and_licence(shared_data_dir):
    text = (shared_data_dir / 'text_corpus_mix' / 'gutenberg' / BOOKS[0]).read_text()
    body = gutenberg_body(text)
    assert 'START OF THIS PROJECT GUTENBERG' in text and 'START OF THIS' not in body
    assert 'Title: Alice' in text and 'Title: Alice' not in body  # the header
    assert 'registered trademark' in text and 'registered trademark' not in body  # licence
    assert "ALICE’S ADVENTURES IN WONDERLAND" in body[:1000] and len(body) > 0.8 * len(text)
