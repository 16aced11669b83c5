"""How documents of token ids become language-modelling chunks of at most seq_len + 1 tokens."""

from __future__ import annotations

from typing import Any

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


class ChunkSource:
    """Random access to the language-modelling chunks of `TokenDocuments` (documents ending with
    EOS, see jaxlm/data/documents.py), each document read as `[bos] + document`: example i is
    {'inputs': chunk[:-1], 'targets': chunk[1:]}. Only the chunk table lives in memory."""

    def __init__(self, docs: Any, bos_id: int, seq_len: int):
        self.docs, self.bos_id = docs, bos_id
        self.doc, self.begins, self.ends = chunk_spans(docs.lengths + 1, seq_len)  # + 1: the bos

    def __len__(self) -> int:
        return len(self.doc)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        tokens = self.docs[int(self.doc[index])]
        begin, end = int(self.begins[index]), int(self.ends[index])
        # begin is 0 for a document's first chunk, which starts with bos.
        body = tokens[max(begin - 1, 0):end - 1]
        chunk = np.concatenate([[self.bos_id], body]).astype(np.int32) if begin == 0 else body
        return {'inputs': chunk[:-1], 'targets': chunk[1:]}
