"""Normalisation and language identification."""

import unicodedata

from data_pipelines.document import Document
from data_pipelines.language_id import LanguageFilter
from data_pipelines.normalize import Normalizer


def test_normalizer_nfc_controls_whitespace_and_utf8_repair():
    norm = Normalizer()
    decomposed = unicodedata.normalize('NFD', 'café')
    raw = '\ufeff  ' + decomposed + ' \x00bar\x07\r\n\r\n\r\n\r\nnext\u00a0line  \t\n'
    doc = norm(Document('d', raw))
    assert doc.text == 'café bar\n\nnext line'
    assert norm(Document('d', 'ok text' + '\udcff' + 'x' * 200)).text == 'ok text' + 'x' * 200
    repaired = norm(Document('d', 'ok text' + '\udcff' + 'x' * 200))
    assert repaired.metadata == {'invalid_utf8_removed': 1}
    assert norm(Document('d', 'ab\udcff\udcfe' * 10)) == 'invalid_utf8'
    assert norm(Document('d', ' \n\t\x00 ')) == 'empty'
    assert Normalizer(max_chars=10)(Document('d', 'x' * 11)) == 'too_long'


def test_language_filter_annotates_and_removes():
    keep = LanguageFilter()(Document('e', 'This is a plain English sentence about the weather.'))
    assert keep.metadata['language'] == 'en' and keep.metadata['language_score'] > 0.9
    assert LanguageFilter()(Document('f', 'Ceci est une phrase en français.')) == 'language_fr'
    assert LanguageFilter(languages=('en', 'fr'))(Document('f', 'Ceci est une phrase en '
                                                          'français.')).metadata['language'] == 'fr'
    assert LanguageFilter(min_score=1.01)(Document('e', 'Hello there, my friend.')) == \
        'language_low_score'
