"""Curates ../shared/data/text_corpus_mix (books, speeches, reviews, web) into token shards.

    python -m data_pipelines.curate --config data_pipelines/configs/text_corpus_mix.py \
        --output runs/curated/text_corpus_mix

`experiments/curated_shards.py` pre-trains on the shards this writes.
"""

from data_pipelines.configs import base_config, source


def get_config():
    c = base_config()
    c.name = 'text_corpus_mix'
    c.description = (
        'A small, varied English pretraining corpus for jaxlm development: public-domain books '
        'and US presidential speeches, movie reviews and web text (C4 and Dolma Common Crawl), '
        'cleaned, filtered, deduplicated and decontaminated against the evaluation sets that '
        'jaxlm ships, so that models trained on it can be evaluated on them.')
    c.datasheet.update(
        creators='The jaxlm developers, for developing and testing jaxlm (no external funding)',
        contact='an issue in the jaxlm repository',
        offensive_content=(
            'Books and speeches of their time may hold language and views now seen as racist, '
            'sexist or otherwise offensive (no classifier judges them); movie reviews and web '
            'pages can insult or describe violence without a listed bad word.'),
        personal_information=(
            'Names of public figures, authors and characters; in web pages, names, street '
            'addresses and private IP addresses, which the pii stage does not detect.'),
        uses='Pre-training small jaxlm models (`experiments/curated_shards.py`) and testing the '
             'data pipeline.',
        not_for='Training models for deployment; measuring anything about English at large (it '
                'is a small, skewed sample: old books, US presidents, one review site, web text).',
        maintenance='Maintained with jaxlm: rebuilt from the inputs by this config whenever it '
                    'or the stages change; an error is fixed in the config or a stage, and '
                    'documents are removed on request by excluding them in the inputs.')
    root = 'text_corpus_mix'
    c.sources.books = source(
        ['pg*.txt'], 'text', root=f'{root}/gutenberg', weight=1.0, gutenberg_body=True,
        text_split='chunk', chunk_chars=20_000,
        licence='Public domain in the USA (Project Gutenberg eBooks; PG licence in the source '
                'folder)',
        description='15 Project Gutenberg books without the PG header and licence, their '
                    'hard-wrapped lines joined into paragraphs (unwrap_lines, on for '
                    'gutenberg_body), in chunks of whole paragraphs of at most 20,000 characters',
        creators='Their authors (Austen, Dickens, Melville, Twain and others); transcribed by '
                 'Project Gutenberg volunteers',
        timeframe='Written from the 17th to the early 20th century; Project Gutenberg editions')
    c.sources.speeches = source(
        ['*.jsonl'], 'jsonl', root=f'{root}/speeches', id_field='id', weight=2.0,
        licence='Public domain (US Government works)',
        description='59 inaugural addresses and 65 State of the Union addresses (NLTK)',
        creators='US presidents and their speech writers; compiled by Kathleen Ahrens from '
                 'C-SPAN',
        timeframe='Inaugural addresses 1789-2021, State of the Union addresses 1945-2006')
    c.sources.reviews = source(
        ['movie_reviews.jsonl'], 'jsonl', root=f'{root}/reviews', id_field='id', weight=0.5,
        num_shards=4,
        licence='CC BY 4.0 (Pang & Lee polarity dataset v2.0, via NLTK)',
        description='2,000 lower-cased, tokenised movie reviews',
        creators='Reviewers of the rec.arts.movies.reviews newsgroup (IMDb archive); collected '
                 'by Bo Pang and Lillian Lee',
        timeframe='Reviews written before 2002; dataset v2.0 of June 2004')
    c.sources.c4 = source(
        ['c4_en_*.jsonl'], 'jsonl', root=f'{root}/web', weight=1.0, num_shards=2,
        licence='ODC-BY 1.0 (C4); page copyright stays with the owners',
        description='1,200 C4 English documents (train and validation samples)',
        creators='Web page authors; crawled by Common Crawl, cleaned into C4 by Raffel et al. '
                 '(Google)',
        timeframe='Common Crawl of April 2019')
    c.sources.dolma_cc = source(
        ['dolma_cc_en_*.jsonl'], 'jsonl', root=f'{root}/web', id_field='id', weight=1.0,
        licence='ODC-BY (Dolma); page copyright stays with the owners',
        description='20 Dolma Common Crawl documents',
        creators='Web page authors; crawled by Common Crawl, processed into Dolma by AI2',
        timeframe='Crawled March to June 2020; added to Dolma in April 2023')
    c.tokenizer.vocab_size = 8192
    c.shards.num_output_shards = 8
    return c
