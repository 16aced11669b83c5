"""Tokenizer training on curated text and token-shard writing for jaxlm's `data.source='shards'`."""

from data_pipelines.tokenize.shard_writer import write_token_shards
from data_pipelines.tokenize.train import train_tokenizer

__all__ = ['train_tokenizer', 'write_token_shards']
