"""Tokenizer training and encoding throughput (MB/s) on text_corpus_mix, and the token-shard
writer end to end.

For SentencePiece BPE (byte fallback, split digits, 1 thread: jaxlm's options) and HF
`tokenizers` byte-level BPE it times `data_pipelines.tokenize.train_tokenizer` on the first
--train_mb MB of documents, then encoding every document (or the first --docs_mb MB) with the
trained tokenizer in one process (`Tokenizer.encode`, as the shard writer calls it), and reports
bytes per token. Finally `write_token_shards` tokenizes the same documents from --shards JSONL
shards into ArrayRecord on a --workers process pool (encode, seeded shuffle, write).

  PYTHONPATH=. python benchmarks/tokenizer.py --vocab_size 8192 --json /tmp/tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time

import numpy as np

from data_pipelines.document import Document
from data_pipelines.tokenize import train_tokenizer, write_token_shards
from data_pipelines.tokenize.shard_writer import tokenizer_kind
from jaxlm.data import sources, tokenizers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--vocab_size', type=int, default=8192)
    ap.add_argument('--train_mb', type=float, default=8.0)
    ap.add_argument('--docs_mb', type=float, default=0.0, help='0: the whole corpus')
    ap.add_argument('--kinds', default='sentencepiece,hf_bpe')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--shards', type=int, default=8)
    ap.add_argument('--data_dir', default=os.environ.get(sources.DATA_DIR_ENV, '../shared/data'))
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    docs = list(sources.read_documents(sources.resolve_corpus('text_corpus_mix', args.data_dir)))
    sizes = [len(d.encode('utf-8')) for d in docs]
    if args.docs_mb:  # a prefix of the corpus, for quick runs
        keep = int(np.searchsorted(np.cumsum(sizes), args.docs_mb * 1e6)) + 1
        docs, sizes = docs[:keep], sizes[:keep]
    total_mb = sum(sizes) / 1e6
    train_docs, train_bytes = [], 0
    for doc, size in zip(docs, sizes, strict=True):
        if train_bytes >= args.train_mb * 1e6:
            break
        train_docs.append(doc)
        train_bytes += size
    print(f'{len(docs)} documents, {total_mb:.1f} MB; training on {len(train_docs)} documents, '
          f'{train_bytes / 1e6:.1f} MB; vocab {args.vocab_size}')

    out = {'documents': len(docs), 'mb': total_mb, 'train_mb': train_bytes / 1e6, 'kinds': {}}
    print('\n| tokenizer | train s | train MB/s | encode s | encode MB/s | bytes/token | '
          f'write_token_shards MB/s ({args.workers} workers) |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [os.path.join(tmp, f'in{s}.jsonl') for s in range(args.shards)]
        for s, path in enumerate(inputs):
            with open(path, 'w') as f:
                for i in range(s, len(docs), args.shards):
                    f.write(json.dumps(Document(str(i), docs[i]).to_json()) + '\n')
        for kind in args.kinds.split(','):
            start = time.perf_counter()
            path = train_tokenizer(train_docs, os.path.join(tmp, kind), kind, args.vocab_size)
            train_s = time.perf_counter() - start
            tok = tokenizers.build_tokenizer(tokenizer_kind(path), 0, list, None, path)
            start = time.perf_counter()
            n_tokens = sum(len(tok.encode(d)) for d in docs)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            with multiprocessing.get_context('spawn').Pool(args.workers) as pool:
                write_token_shards(inputs, path, os.path.join(tmp, f'{kind}-shards'), 4, 0,
                                   pool.map)
            write_s = time.perf_counter() - start
            row = {'train_seconds': train_s, 'train_mb_per_s': train_bytes / 1e6 / train_s,
                   'encode_seconds': encode_s, 'encode_mb_per_s': total_mb / encode_s,
                   'bytes_per_token': total_mb * 1e6 / n_tokens,
                   'write_shards_mb_per_s': total_mb / write_s}
            out['kinds'][kind] = row
            print(f'| {kind} | {train_s:.1f} | {row["train_mb_per_s"]:.2f} | {encode_s:.1f} | '
                  f'{row["encode_mb_per_s"]:.2f} | {row["bytes_per_token"]:.2f} | '
                  f'{row["write_shards_mb_per_s"]:.2f} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)


if __name__ == '__main__':
    main()
