"""Adversarial curation inputs: every kind of bad record next to good documents."""

from __future__ import annotations

import gzip
import json
import pathlib

import zstandard

# Clean English documents: each passes the default filters (checked by the pipeline test).
GOOD = [
    ('The history of the town begins with a small settlement on the river. Farmers came to the '
     'valley because the soil was rich and the water was close. Over the years they built a mill, '
     'a school and a church, and the village grew into a market town that traded with the cities '
     'of the coast. Many of the old buildings still stand today and visitors can walk along the '
     'narrow streets to see them.\nThe museum in the square tells the story of the people who '
     'lived there. It has tools, letters and photographs that were given by local families. The '
     'guides explain how the town changed when the railway arrived and how the factories of the '
     'last century shaped the lives of the workers and their children.'),
    ('Learning to cook at home is easier than many people think. Start with a few simple recipes '
     'and practise them until you can make them without looking at the book. A good knife, a '
     'heavy pan and fresh ingredients matter more than expensive equipment. Taste the food as you '
     'cook and adjust the salt and the spices to your liking.\nWhen you are comfortable with the '
     'basics, try new dishes from other countries. Each cuisine has its own methods and flavours, '
     'and you will learn something from every one of them. Cooking for friends and family is a '
     'pleasure that is worth the time it takes to learn.'),
    ('The mountain trail starts near the lake and climbs through a forest of old pine trees. '
     'Walkers should carry water, a map and warm clothes, because the weather can change quickly '
     'at high altitude. The path is steep in places but it is well marked and the views from the '
     'top are wonderful on a clear day.\nIn spring the meadows are full of flowers and in autumn '
     'the leaves turn red and gold. Rangers ask visitors to stay on the path, to take their '
     'rubbish home and to leave the animals in peace so that the park stays beautiful for '
     'everyone who comes after them.'),
    ('Good sleep is one of the most important things for our health. Adults need about seven to '
     'nine hours each night, and children need even more. A regular bedtime, a dark and quiet '
     'room and less screen time in the evening all help the body to rest. Coffee and heavy meals '
     'late in the day can make it harder to fall asleep.\nDoctors say that people who sleep well '
     'are better at learning and remembering, and that they are less likely to fall ill. If you '
     'have trouble sleeping for a long time, it is a good idea to talk to a doctor about it.'),
    ('The public library opens at nine in the morning and closes at eight in the evening. Anyone '
     'who lives in the city can borrow books, films and music for three weeks without paying. '
     'The staff are happy to help readers find what they need, and they also run classes for '
     'people who want to learn to use computers or to search for work on the internet.\nOn '
     'Saturday mornings there is a reading hour for young children and their parents. In the '
     'summer the library organises a reading challenge, and every child who reads ten books '
     'receives a small prize and a certificate at the end of the holidays.'),
    ('A small garden can feed a family for much of the year. Choose a sunny place, improve the '
     'soil with compost and plant the vegetables that you like to eat. Beans, tomatoes and salad '
     'leaves grow quickly and do not need much care. Water the plants in the early morning and '
     'pull out the weeds before they spread.\nKeeping a notebook of what you planted and when '
     'you harvested it will help you plan the next season. Many gardeners also share seeds and '
     'advice with their neighbours, and a garden is a good way to meet the people who live '
     'around you.'),
]
PII_TEXT = (' You can write to the author at jane.doe@example.org or call +1 (555) 123-4567 '
            'for more details. The server is at 8.8.8.8 and the printer at 192.168.1.20.')
FRENCH = ("L'histoire de la ville commence avec un petit village au bord de la rivière. Les "
          'paysans sont venus dans la vallée parce que la terre était riche et que l’eau était '
          'proche. Au fil des années, ils ont construit un moulin, une école et une église, et le '
          'village est devenu une ville de marché qui faisait du commerce avec les villes de la '
          'côte. Beaucoup de vieux bâtiments sont encore debout aujourd’hui.')
BAD_WORD_TEXT = GOOD[2].replace('wonderful', 'fucking wonderful')


def near_duplicate(text: str) -> str:
    """The text with one word changed: Jaccard of word 5-grams stays above 0.9."""
    return text.replace('wonderful on a clear day', 'splendid on a clear day')


def gsm8k_text(data_dir: pathlib.Path) -> str:
    with open(data_dir / 'gsm8k' / 'test_sample.jsonl') as f:
        question = json.loads(f.readline())['question']
    return GOOD[3] + '\nHere is a puzzle for the reader. ' + question


def write_inputs(root: pathlib.Path, data_dir: pathlib.Path) -> dict[str, int]:
    """Writes the adversarial input files under `root`; returns the expected removal counts."""
    root.mkdir(parents=True, exist_ok=True)
    good = [{'text': GOOD[0]}, {'text': GOOD[1] + PII_TEXT}, {'text': GOOD[2]},
            {'text': GOOD[0]},  # exact duplicate of the first
            {'text': near_duplicate(GOOD[2])},  # near duplicate of the third
            {'text': FRENCH}, {'text': BAD_WORD_TEXT}, {'text': gsm8k_text(data_dir)},
            {'text': GOOD[3].replace('\n', '\r\n') + '\x07\x00'},  # CRLF and control characters
            {'text': GOOD[0].replace('The museum', 'The toxicmarker museum')}]
    with gzip.open(root / 'good.jsonl.gz', 'wt') as f:
        f.writelines(json.dumps(r) + '\n' for r in good)

    bad_lines = [
        b'{"text": "an unterminated string\n',  # malformed JSON
        b'not json at all\n',  # malformed JSON
        b'{"body": "no text field"}\n',  # missing text field
        b'{"text": 42}\n',  # text is not a string
        b'{"text": ""}\n',  # empty
        b'{"text": "   \\n\\t  "}\n',  # whitespace only -> empty
        b'{"text": "' + b'\xff\xfe' * 50 + b' mostly garbage"}\n',  # invalid UTF-8: rejected
        # One invalid byte: repaired.
        json.dumps({'text': GOOD[5]}).encode().replace(b'compost', b'compost\xe9') + b'\n',
        b'{"text": "' + b'huge ' * 300_000 + b'"}\n',  # a 1.5 MB single line: too long
        json.dumps({'text': ' '.join([GOOD[0].replace('\n', ' ')] * 200)}).encode() + b'\n',
        # ^ a 140 kB single line of one paragraph repeated
        b'\n',  # a blank line is malformed JSON too
    ]
    (root / 'bad.jsonl').write_bytes(b''.join(bad_lines))

    lines = [json.dumps({'text': g}).encode() + b'\n' for g in GOOD[:4]]
    # Stored (level 0) gzip: the cut falls inside the second line, so one document comes first.
    blob = gzip.compress(b''.join(lines), compresslevel=0, mtime=0)
    (root / 'truncated.jsonl.gz').write_bytes(blob[:10 + len(lines[0]) + len(lines[1]) // 2])
    zblob = zstandard.ZstdCompressor().compress(b''.join(lines))
    (root / 'cut.jsonl.zst').write_bytes(zblob[:len(zblob) // 2])
    (root / 'complete.jsonl.zst').write_bytes(zstandard.ZstdCompressor().compress(
        json.dumps({'text': GOOD[3].replace('seven', 'eight')}).encode() + b'\n'))

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({'content': [GOOD[0].replace('river', 'lake'), None, GOOD[3]],
                             'doc_id': ['p0', 'p1', 'p0']}),  # an id twice: the second is rejected
                   root / 'table.parquet')
    (root / 'notes.txt').write_text(GOOD[4] + '\n\n\n\n')
    (root / 'broken.parquet').write_bytes(b'PAR1 this is not a parquet file')
    # good, bad, truncated gzip (1 + the cut), cut zstd, complete zstd, parquet rows, broken
    # parquet, text file
    return {'records': len(good) + len(bad_lines) + 2 + 1 + 1 + 3 + 1 + 1}


def curation_config(inputs: pathlib.Path, data_dir: pathlib.Path):
    """A config over the adversarial inputs: all stages, small tokenizer, test classifier."""
    from data_pipelines.configs import base_config, source

    c = base_config()
    c.name = 'adversarial'
    c.description = 'Adversarial inputs of the curation tests.'
    c.data_dir = str(data_dir)
    root = str(inputs)
    c.sources.web = source(['*.jsonl*'], 'jsonl', root=root, licence='test-licence-A', weight=1.0)
    c.sources.table = source(['*.parquet'], 'parquet', root=root, text_field='content',
                             id_field='doc_id', licence='test-licence-B', weight=2.0)
    c.sources.notes = source(['notes.txt'], 'text', root=root, licence='test-licence-C',
                             weight=0.0, unwrap_lines=True, creators='test-creators-C',
                             timeframe='test-timeframe-C')
    c.datasheet.update({k: f'test-{k}' for k in c.datasheet})
    c.stages = ('normalize', 'language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb',
                'bad_words', 'toxicity', 'pii', 'decontamination')
    c.normalize.max_chars = 1_000_000
    c.toxicity.classifier = 'curation_toxicity_stub:score'
    c.decontamination.benchmarks = ('mmlu', 'gsm8k')
    c.dedup.exact.num_partitions = 2
    c.dedup.minhash.num_partitions = 2
    c.tokenizer.update(vocab_size=400, max_training_chars=0)
    c.shards.num_output_shards = 2
    return c
