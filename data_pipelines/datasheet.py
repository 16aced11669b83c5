"""DATASHEET.md from a run's statistics, after Gebru et al., "Datasheets for Datasets" (2021).

The counts come from `stats.json`; the answers no count gives (creators, contact, timeframe,
remaining offensive content and personal data, uses, maintenance) from `config.datasheet` and
each source's `creators` and `timeframe`. An empty answer is shown as N/A, naming its field.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from data_pipelines.accounting import EXAMPLE_NOTES

_PURPOSE = {
    'read': 'parse the input files (malformed records, truncated or unreadable files)',
    'normalize': 'Unicode NFC, control characters, whitespace; invalid UTF-8 repaired or rejected',
    'language': 'language identification (py3langid) and its minimum probability',
    'gopher_repetition': 'Gopher repetition rules (Rae et al. 2021, table A1)',
    'gopher_quality': 'Gopher quality rules (word counts and lengths, symbols, stop words)',
    'c4': 'C4 line and document rules (lines without terminal punctuation etc. are removed)',
    'fineweb': 'FineWeb quality rules (line punctuation, short lines, duplicated lines)',
    'bad_words': "C4's bad-words rule with the LDNOOBW lists",
    'toxicity': 'toxicity classifier above its threshold',
    'pii': 'e-mail addresses, phone numbers and public IP addresses replaced by placeholders',
    'decontamination': 'documents sharing a word n-gram with an evaluation set removed',
    'exact_dedup': 'exact duplicates of normalised text (the first occurrence is kept)',
    'minhash_dedup': 'near duplicates by MinHash LSH, clustered with union-find (one kept)',
    'mixture': 'source weights: down-sampled documents removed, up-sampled ones repeated',
}


def _cell(text: str) -> str:
    return ' '.join(text.split()).replace('|', '\\|')[:160]


def _answer(config: ml_collections.ConfigDict, field: str) -> str:
    return config.datasheet[field] or f'N/A (config.datasheet.{field} is empty).'


def _percent(part: int, whole: int) -> str:
    return f'{100 * part / whole:.1f} %' if whole else '—'


def _stage(stages: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((st for st in stages if st['name'] == name), None)


def _safety(stages: list[dict[str, Any]], config: ml_collections.ConfigDict) -> list[str]:
    """What the safety and PII stages of this run did, then what the config says may remain."""
    bad, tox, pii = (_stage(stages, n) for n in ('bad_words', 'toxicity', 'pii'))
    return [
        '### Offensive content', '',
        f"- bad words: {bad['removed']} documents with a word of the LDNOOBW lists removed"
        if bad else '- bad words: no bad-words filter ran (`bad_words` is not in config.stages)',
        f"- toxicity: {tox['removed']} documents scored above {config.toxicity.threshold} by "
        f'`{config.toxicity.classifier}` removed'
        if tox else '- toxicity: no classifier ran (`toxicity` is not in config.stages)',
        f"- what may remain: {_answer(config, 'offensive_content')}", '',
        '### Personal information', '',
        '- e-mail, phone and public IP addresses replaced by placeholders: ' + (', '.join(
            f'{k}={v}' for k, v in sorted(pii['counters'].items())) or 'none found')
        if pii else '- no PII redaction ran (`pii` is not in config.stages)',
        f"- what may remain: {_answer(config, 'personal_information')}", '']


def _stage_chars(sources: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """Per source, the fraction of the characters entering each per-document stage it kept."""
    if not config.stages:
        return []
    out = ['Characters kept by each per-document stage (of those it read), per source:', '',
           '| source | ' + ' | '.join(config.stages) + ' |',
           '|---|' + '---:|' * len(config.stages)]
    for name, s in sources.items():
        out.append(f'| {name} | ' + ' | '.join(_percent(s['stage_chars'][st][1],
                                                        s['stage_chars'][st][0])
                                                for st in config.stages) + ' |')
    return [*out, '']


def render(stats: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    stages = stats['stages']
    sources = stats['sources']
    final = stages[-1]
    emitted = final['counters'].get('emitted', 0)
    total = {k: sum(s[k] for s in sources.values())
             for k in ('files', 'records_read', 'damaged_files', 'repeated_ids')}
    out = [f"# Datasheet: {stats['name']}", '',
           'Written by `python -m data_pipelines.curate` from `stats.json` of the same run; the '
           'sections follow "Datasheets for Datasets" (Gebru et al., 2021).', '',
           '## Motivation', '', config.description or 'N/A (config.description is empty).', '',
           f"Created by: {_answer(config, 'creators')}", '',
           '## Composition', '',
           f"{total['records_read']} input records from {total['files']} files. "
           f"{total['damaged_files']} files were truncated or unreadable: their records up to "
           'the damage are counted, the rest is lost (the read stage below counts one '
           f"placeholder for each). {total['repeated_ids']} records repeating an id met earlier "
           "in their file (or source, with `id_scope='source'`) were removed. "
           f'{emitted} curated documents '
           f"({final['counters'].get('emitted_chars', 0)} characters) after filtering, "
           'deduplication and mixture weights.', '',
           '| source | files | records read | repeated ids | after filters | characters kept by '
           'filters | after dedup | weight | curated docs | curated chars | licence |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for name, s in sources.items():
        out.append(f"| {name} | {s['files']} | {s['records_read']} | {s['repeated_ids']} | "
                   f"{s['after_filters']} | {_percent(s['chars_after_filters'], s['chars_read'])} "
                   f"| {s['after_dedup']} | {s['weight']:g} | {s['curated_documents']} | "
                   f"{s['curated_chars']} | {_cell(s['licence'])} |")
    for name, s in sources.items():
        if s['ids_across_files']:
            out += ['', f"{s['ids_across_files']} records of **{name}** share their id with a "
                    "record of another of its files; they are kept, as their ids name the file "
                    "(`id_scope='file'`)."]
    out += ['', 'Each document keeps its id (`<source>/<file>:<index>`, or `<source>/<file>/<id>` '
            'with an id field, `#` and `%` of the id percent-escaped; a mixture copy is '
            '`<id>#<k>`), source, licence and file in its metadata.', '']
    out += _safety(stages, config)
    out += ['## Collection process', '']
    out += [f"- **{name}**: {s['description'] or 'N/A'}. Created by: {s['creators'] or 'N/A'}. "
            f"Timeframe: {s['timeframe'] or 'N/A'}." for name, s in sources.items()]
    out += ['', '## Preprocessing and cleaning', '',
            'Every input record ends in exactly one place: kept, or removed by one stage with a '
            'reason (each stage reads what the previous one kept). Removed documents are in '
            '`removed/<stage>/<reason>/`.', '']
    out += ['| stage | what it does | read | kept | removed | modified | docs per CPU s |',
            '|---|---|---:|---:|---:|---:|---:|']
    for st in stages:
        rate = f"{st['read'] / st['seconds']:.0f}" if st['seconds'] > 0 else '—'
        out.append(f"| {st['name']} | {_PURPOSE.get(st['name'], '')} | {st['read']} | {st['kept']} "
                   f"| {st['removed']} | {st['modified']} | {rate} |")
    out.append('')
    unwrapped = [name for name, s in sources.items() if s['unwrap_lines']]
    if unwrapped:
        out += ['Hard-wrapped text: C4\'s and FineWeb\'s rules judge lines, and C4 drops every '
                'line without terminal punctuation, so on a book wrapped at ~70 characters it '
                'keeps only the line fragments that happen to end a sentence. The lines of each '
                'paragraph of ' + ', '.join(f'**{n}**' for n in unwrapped) + ' were joined before '
                'the stages (source setting `unwrap_lines`).', '']
    out += _stage_chars(sources, config)
    out += ['### Removal reasons, with examples', '']
    for st in stages:
        if st['counters']:
            out.append(f"- **{st['name']}** counts: " + ', '.join(
                f'{k}={v}' for k, v in sorted(st['counters'].items())))
        for reason, n in st['reasons'].items():
            out.append(f"- **{st['name']} / {reason}**: {n}")
            for ex in st['examples'].get(reason, []):
                notes = ''.join(f' ({k}: {_cell(ex[k])})' for k in EXAMPLE_NOTES if k in ex)
                out.append(f"  - `{_cell(ex['id'])}`{notes}: {_cell(ex['text']) or '(empty)'}")
    if stats['decontamination_items']:
        removed = next((s['reasons'] for s in stages if s['name'] == 'decontamination'), {})
        out += ['', '### Decontamination', '',
                f"Word {config.decontamination.ngram_size}-grams of each benchmark's items; a "
                'document sharing one is removed (counted under its first benchmark).', '',
                '| benchmark | items indexed | documents removed |', '|---|---:|---:|']
        out += [f"| {b} | {n} | {removed.get(f'contaminated_{b}', 0)} |"
                for b, n in stats['decontamination_items'].items()]
    tokens = stats['tokens']
    out += ['', '## Tokenizer and shards', '']
    if tokens:
        out += [f"- tokenizer: {tokens['kind']}, vocabulary {tokens['vocab_size']}, "
                f"`{tokens['tokenizer_path']}`"]
        out += [f'- {k}: {v:.4g}' if isinstance(v, float) else f'- {k}: {v}'
                for k, v in sorted(tokens.items())
                if k not in ('kind', 'vocab_size', 'tokenizer_path') and
                isinstance(v, (int, float, str))]
    else:
        out.append('N/A (config.tokenizer.enabled is False).')
    out += ['', '## Uses', '', _answer(config, 'uses'), '',
            f"Not for: {_answer(config, 'not_for')}", '',
            '## Distribution', '',
            'Not redistributed: it is rebuilt from the inputs by the config. Licences are those of '
            'the sources above; derivatives of share-alike sources must keep their terms.', '',
            '## Maintenance', '', _answer(config, 'maintenance'), '',
            f"Contact: {_answer(config, 'contact')}", '',
            'Rebuilt by rerunning the config; finished shards are skipped (`markers/`).', '']
    return '\n'.join(out)


def write_datasheet(path: str, stats: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(render(stats, config))
