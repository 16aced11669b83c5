"""DATASHEET.md from a run's statistics, after Gebru et al., "Datasheets for Datasets" (2021)."""

from __future__ import annotations

from typing import Any

import ml_collections

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


def render(stats: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    stages = stats['stages']
    sources = stats['sources']
    read, final = stages[0], stages[-1]
    emitted = final['counters'].get('emitted', 0)
    out = [f"# Datasheet: {stats['name']}", '',
           'Written by `python -m data_pipelines.curate` from `stats.json` of the same run; the '
           'sections follow "Datasheets for Datasets" (Gebru et al., 2021).', '',
           '## Motivation', '', config.description or 'N/A (config.description is empty).', '',
           '## Composition', '',
           f"{read['read']} input records from {sum(s['files'] for s in sources.values())} files; "
           f"{emitted} curated documents ({final['counters'].get('emitted_chars', 0)} characters) "
           'after filtering, deduplication and mixture weights.', '',
           '| source | files | records read | after filters | after dedup | weight | curated docs '
           '| curated chars | licence |', '|---|---:|---:|---:|---:|---:|---:|---:|---|']
    for name, s in sources.items():
        out.append(f"| {name} | {s['files']} | {s['records_read']} | {s['after_filters']} | "
                   f"{s['after_dedup']} | {s['weight']:g} | {s['curated_documents']} | "
                   f"{s['curated_chars']} | {_cell(s['licence'])} |")
    out += ['', 'Each document keeps its id (`<source>/<file>:<index>`, or `<source>/<file>/<id>` '
            'with an id field), source, licence and file in its metadata.', '',
            '## Collection process', '']
    out += [f"- **{name}**: {s['description'] or 'N/A'}" for name, s in sources.items()]
    out += ['', '## Preprocessing and cleaning', '',
            'Every input record ends in exactly one place: kept, or removed by one stage with a '
            'reason (each stage reads what the previous one kept). Removed documents are in '
            '`removed/<stage>/<reason>/`.', '',
            '| stage | what it does | read | kept | removed | modified | docs per CPU s |',
            '|---|---|---:|---:|---:|---:|---:|']
    for st in stages:
        rate = f"{st['read'] / st['seconds']:.0f}" if st['seconds'] > 0 else '—'
        out.append(f"| {st['name']} | {_PURPOSE.get(st['name'], '')} | {st['read']} | {st['kept']} "
                   f"| {st['removed']} | {st['modified']} | {rate} |")
    out += ['', '### Removal reasons, with examples', '']
    for st in stages:
        if st['counters']:
            out.append(f"- **{st['name']}** counts: " + ', '.join(
                f'{k}={v}' for k, v in sorted(st['counters'].items())))
        for reason, n in st['reasons'].items():
            out.append(f"- **{st['name']} / {reason}**: {n}")
            for ex in st['examples'].get(reason, []):
                out.append(f"  - `{_cell(ex['id'])}`: {_cell(ex['text']) or '(empty)'}")
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
    out += ['', '## Uses', '',
            'Pre-training small jaxlm models (`experiments/curated_shards.py`) and testing the '
            'data pipeline. Not a representative sample of English; not for deployment.', '',
            '## Distribution', '',
            'Not redistributed: it is rebuilt from the inputs by the config. Licences are those of '
            'the sources above; derivatives of share-alike sources must keep their terms.', '',
            '## Maintenance', '',
            'Rebuilt by rerunning the config; finished shards are skipped (`markers/`).', '']
    return '\n'.join(out)


def write_datasheet(path: str, stats: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(render(stats, config))
