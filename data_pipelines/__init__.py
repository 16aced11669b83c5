"""Data curation (ingest, filter, deduplicate, tokenize to shards): see the data-curation issue.

The training core's own input path (corpus lookup, tokenizer, packing) is `jaxlm.data`.
"""
