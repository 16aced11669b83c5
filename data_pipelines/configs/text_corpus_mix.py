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
    root = 'text_corpus_mix'
    c.sources.books = source(
        ['pg*.txt'], 'text', root=f'{root}/gutenberg', weight=1.0, gutenberg_body=True,
        text_split='chunk', chunk_chars=20_000,
        licence='Public domain in the USA (Project Gutenberg eBooks; PG licence in the source '
                'folder)',
        description='15 Project Gutenberg books without the PG header and licence, in '
                    'chunks of whole paragraphs of at most 20,000 characters')
    c.sources.speeches = source(
        ['*.jsonl'], 'jsonl', root=f'{root}/speeches', id_field='id', weight=2.0,
        licence='Public domain (US Government works)',
        description='59 inaugural addresses and 65 State of the Union addresses (NLTK)')
    c.sources.reviews = source(
        ['movie_reviews.jsonl'], 'jsonl', root=f'{root}/reviews', id_field='id', weight=0.5,
        num_shards=4,
        licence='CC BY 4.0 (Pang & Lee polarity dataset v2.0, via NLTK)',
        description='2,000 lower-cased, tokenised movie reviews')
    c.sources.c4 = source(
        ['c4_en_*.jsonl'], 'jsonl', root=f'{root}/web', weight=1.0, num_shards=2,
        licence='ODC-BY 1.0 (C4); page copyright stays with the owners',
        description='1,200 C4 English documents (train and validation samples)')
    c.sources.dolma_cc = source(
        ['dolma_cc_en_*.jsonl'], 'jsonl', root=f'{root}/web', id_field='id', weight=1.0,
        licence='ODC-BY (Dolma); page copyright stays with the owners',
        description='20 Dolma Common Crawl documents')
    c.tokenizer.vocab_size = 8192
    c.shards.num_output_shards = 8
    return c
