"""Bad words (C4 style, checked against datatrove's C4BadWordsFilter), PII redaction (datatrove's
e-mail and IP patterns plus phone numbers), and the toxicity classifier hook."""

import pytest

from data_pipelines.document import Document
from data_pipelines.filters.bad_words import BadWordsFilter
from data_pipelines.filters.toxicity import ToxicityFilter
from data_pipelines.pii import PIIRedactor

TEXTS = [
    'A perfectly clean sentence about gardens and libraries.',
    'He said it was a fucking disaster, really.',
    'Shitake mushrooms are tasty.',  # a bad word inside a longer word is no match
    'Look at this SHIT!',
    'ass',
    'the classic assessment of glass',
    'two girls and 2 girls 1 cup are different',
    'Ficken ist ein deutsches Wort.',
]


def test_bad_words_agree_with_datatrove(shared_data_dir, monkeypatch):
    pytest.importorskip('datatrove')
    from datatrove.data import Document as DTDocument
    from datatrove.pipeline.filters import c4_filters

    lists = shared_data_dir / 'profanity_wordlists'
    # datatrove downloads the same LDNOOBW lists; point it at the local copies instead.
    monkeypatch.setattr(c4_filters, 'cached_asset_path_or_download',
                        lambda url, **kw: str(lists / f"{url.rsplit('/', 1)[1]}.txt"))
    ours = BadWordsFilter(str(lists))
    for lang in ('en', 'de'):
        theirs = c4_filters.C4BadWordsFilter(default_language=lang)
        for i, text in enumerate(TEXTS):
            verdict = theirs.filter(DTDocument(text=text, id=str(i)))
            expected = 'keep' if verdict is True else verdict[1]
            got = ours(Document(str(i), text, {'language': lang}))
            assert (got if isinstance(got, str) else 'keep') == expected, (lang, text)
    assert ours(Document('x', TEXTS[1])) == 'document_removed_with_badwords'  # default: en
    assert ours(Document('x', TEXTS[1], {'language': 'xx'})).text == TEXTS[1]  # no list: kept
    with pytest.raises(ValueError, match="no bad-words list for language 'xx'"):
        BadWordsFilter(str(lists), fail_on_missing_language=True)(
            Document('x', 'a', {'language': 'xx'}))


def test_pii_redaction_matches_datatrove_for_emails_and_ips():
    pytest.importorskip('datatrove')
    from datatrove.pipeline.formatters.pii import PIIFormatter

    text = ('Write to a.b-c@mail.example.co.uk or x@[10.0.0.1]. Hosts 8.8.8.8, 192.168.0.1, '
            '127.0.0.1, 300.1.1.1 and 1.1.1.1.')
    theirs = PIIFormatter(email_replacement='<EMAIL_ADDRESS>', ip_replacement='<IP_ADDRESS>')
    ours, counts = PIIRedactor().redact(text)
    assert ours == theirs.format(text)
    assert counts == {'email': 2, 'phone': 0, 'ip': 2}


def test_phone_numbers_and_counts():
    redactor = PIIRedactor()
    text, counts = redactor.redact('Call +1 (555) 123-4567, 555.123.4567 or +44 20 7946 0958. '
                                   'Not 2021-05-06, 12 345 678, 1999 or ISBN 978-3-16-148410-0.')
    assert text == ('Call <PHONE_NUMBER>, <PHONE_NUMBER> or <PHONE_NUMBER>. '
                    'Not 2021-05-06, 12 345 678, 1999 or ISBN 978-3-16-148410-0.')
    assert counts == {'email': 0, 'phone': 3, 'ip': 0}
    doc = redactor(Document('d', 'mail me: me@example.com'))
    assert doc.metadata['pii_redactions'] == {'email': 1, 'phone': 0, 'ip': 0}
    assert redactor(Document('d', 'nothing here')).metadata == {}


def test_toxicity_hook():
    hook = ToxicityFilter('curation_toxicity_stub:score', threshold=0.5)
    assert hook(Document('a', 'a toxicmarker text')) == 'toxic'
    assert hook(Document('b', 'a kind text')).metadata['toxicity'] == 0.1
    with pytest.raises(ValueError, match="must be 'module:function'"):
        ToxicityFilter('no_colon')(Document('c', 'x'))
    with pytest.raises(ValueError, match='nope is not a function'):
        ToxicityFilter('curation_toxicity_stub:nope')(Document('c', 'x'))
