"""Data input: corpus sources, tokenizers and the grain pipeline."""
