"""How documents of token ids become training chunks of at most seq_len + 1 tokens."""

from __future__ import annotations

import numpy as np


def chunk_spans(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document index, begin, end) of every chunk of documents with these token counts.

    Consecutive chunks of a document overlap by one token (stride seq_len), so every token after
    the first is a target exactly once; a document of one token has no chunk.
    """
    lengths = np.asarray(lengths, np.int64)
    counts = np.maximum(lengths - 1 + seq_len - 1, 0) // seq_len
    doc = np.repeat(np.arange(len(lengths)), counts)
    first_chunk = np.cumsum(counts) - counts
    begin = (np.arange(len(doc)) - first_chunk[doc]) * seq_len
    end = np.minimum(begin + seq_len + 1, lengths[doc])
    return doc, begin, end
