"""MinHash LSH dedup: jaxlm's vectorised signatures against `datasketch` on the same documents.

Documents: text_corpus_mix cut into non-overlapping --window-word documents, plus near-duplicates
of randomly chosen ones (each word replaced with probability U(0, --max_edit)), up to --docs in
all. Both implementations shingle identically (lower-cased `[a-z0-9']+` word 5-grams), use 112
permutations banded 14 x 8 (FineWeb) and the same union-find; the table compares signature
throughput, the recall of the injected pairs per true-Jaccard bucket (against the S-curve), and
the documents each removes. Then `run_minhash_dedup` dedups all documents end to end (JSONL
shards -> bucket files -> clusters) on a --workers process pool.

  PYTHONPATH=. python benchmarks/minhash.py --docs 60000 --json /tmp/minhash.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import tempfile
import time

import numpy as np
from datasketch import MinHash, MinHashLSH

from data_pipelines.dedup import MinHashConfig, run_minhash_dedup
from data_pipelines.dedup.minhash import document_signatures
from data_pipelines.dedup.signatures import band_hashes, candidate_probability
from data_pipelines.dedup.union_find import min_representatives
from data_pipelines.document import Document
from jaxlm.data import sources

_WORD = re.compile(r"[a-z0-9']+")
BUCKETS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))


def shingles(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    return {' '.join(words[i:i + 5]) for i in range(max(len(words) - 4, 1))} if words else set()


def make_documents(data_dir: str, window: int, total: int, max_edit: float, seed: int
                   ) -> tuple[list[str], list[tuple[int, int]]]:
    """(documents, injected (original, copy) index pairs)."""
    rng = random.Random(seed)
    texts = sources.read_documents(sources.resolve_corpus('text_corpus_mix', data_dir))
    words = ' '.join(texts).split()
    base = [' '.join(words[i:i + window]) for i in range(0, len(words) - window + 1, window)]
    base = base[:total // 2]
    docs, pairs = list(base), []
    vocab = words[:200000]
    while len(docs) < total:
        original = rng.randrange(len(base))
        edit = rng.uniform(0, max_edit)
        copy = [rng.choice(vocab) if rng.random() < edit else w for w in base[original].split()]
        pairs.append((original, len(docs)))
        docs.append(' '.join(copy))
    return docs, pairs


def clusters_from_bands(bands: np.ndarray) -> np.ndarray:
    """Representative per document from [documents, bands] band hashes (shared bucket = edge)."""
    edges = []
    for b in range(bands.shape[1]):
        order = np.argsort(bands[:, b], kind='stable')
        same = bands[order[1:], b] == bands[order[:-1], b]
        edges.append(np.stack([order[:-1][same], order[1:][same]], axis=1))
    return representatives(np.concatenate(edges), len(bands))


def representatives(edges: np.ndarray, n: int) -> np.ndarray:
    rep = np.arange(n)
    if len(edges):
        nodes, reps = min_representatives(edges.astype(np.int64))
        rep[nodes] = reps
    return rep


def ours(docs: list[str], cfg: MinHashConfig) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    sigs, _ = document_signatures(docs, cfg)
    seconds = time.perf_counter() - start
    return seconds, clusters_from_bands(band_hashes(sigs, cfg.num_bands, cfg.rows_per_band))


def datasketch(docs: list[str], cfg: MinHashConfig) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    minhashes = []
    for text in docs:
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch([s.encode('utf-8') for s in shingles(text)])
        minhashes.append(m)
    seconds = time.perf_counter() - start
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.num_bands, cfg.rows_per_band))
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    edges = [(i, j) for i, m in enumerate(minhashes) for j in lsh.query(m) if j != i]
    return seconds, representatives(np.array(edges, np.int64).reshape(-1, 2), len(docs))


def end_to_end(docs: list[str], cfg: MinHashConfig, workers: int, num_shards: int
               ) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f'shard{s}.jsonl') for s in range(num_shards)]
        for s, path in enumerate(paths):
            with open(path, 'w') as f:
                for i in range(s, len(docs), num_shards):
                    f.write(json.dumps(Document(str(i), docs[i]).to_json()) + '\n')
        start = time.perf_counter()
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            results = run_minhash_dedup(paths, cfg, os.path.join(tmp, 'work'), pool.map)
        return time.perf_counter() - start, sum(len(r.removed) for r in results.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--docs', type=int, default=60000)
    ap.add_argument('--window', type=int, default=100, help='words per base document')
    ap.add_argument('--max_edit', type=float, default=0.12)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--shards', type=int, default=8)
    ap.add_argument('--data_dir', default=os.environ.get(sources.DATA_DIR_ENV, '../shared/data'))
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    cfg = MinHashConfig.preset('fineweb')
    docs, pairs = make_documents(args.data_dir, args.window, args.docs, args.max_edit, 0)
    truth = np.array([len(shingles(docs[a]) & shingles(docs[b]))
                      / max(len(shingles(docs[a]) | shingles(docs[b])), 1) for a, b in pairs])
    print(f'{len(docs)} documents ({len(pairs)} injected near-duplicates), '
          f'{sum(len(d.encode()) for d in docs) / 1e6:.1f} MB')

    rows, out = [], {'documents': len(docs), 'injected': len(pairs)}
    for name, fn in (('jaxlm (NumPy)', ours), ('datasketch', datasketch)):
        seconds, rep = fn(docs, cfg)
        found = np.array([rep[a] == rep[b] for a, b in pairs])
        removed = int((rep != np.arange(len(docs))).sum())
        recall = {f'{lo:.1f}-{min(hi, 1):.1f}': float(found[(truth >= lo) & (truth < hi)].mean())
                  for lo, hi in BUCKETS if ((truth >= lo) & (truth < hi)).any()}
        out[name] = {'signature_seconds': seconds, 'docs_per_s': len(docs) / seconds,
                     'recall': recall, 'removed': removed}
        rows.append((name, seconds, recall, removed))
    theory = {f'{lo:.1f}-{min(hi, 1):.1f}': float(np.mean(
        [candidate_probability(j, 14, 8) for j in truth[(truth >= lo) & (truth < hi)]]))
        for lo, hi in BUCKETS if ((truth >= lo) & (truth < hi)).any()}
    counts = {k: int(((truth >= lo) & (truth < hi)).sum())
              for k, (lo, hi) in zip(theory, [b for b in BUCKETS
                                              if ((truth >= b[0]) & (truth < b[1])).any()],
                                     strict=True)}
    out['s_curve'], out['pairs_per_bucket'] = theory, counts

    print('\n| implementation | signatures s | docs/s | ' + ' | '.join(
        f'recall J {k} (n={counts[k]})' for k in theory) + ' | documents removed |')
    print('|---|---:|---:|' + '---:|' * len(theory) + '---:|')
    for name, seconds, recall, removed in rows:
        print(f'| {name} | {seconds:.1f} | {len(docs) / seconds:,.0f} | '
              + ' | '.join(f'{recall[k]:.3f}' for k in theory) + f' | {removed} |')
    print('| S-curve 1-(1-J^8)^14 | | | ' + ' | '.join(f'{theory[k]:.3f}' for k in theory)
          + ' | |')
    speedup = out['datasketch']['signature_seconds'] / out['jaxlm (NumPy)']['signature_seconds']
    print(f'\nsignatures: jaxlm is {speedup:.1f}x faster than datasketch')
    out['speedup'] = speedup

    seconds, removed = end_to_end(docs, cfg, args.workers, args.shards)
    print(f'end to end: run_minhash_dedup over {args.shards} JSONL shards, {args.workers} '
          f'workers: {seconds:.1f} s ({len(docs) / seconds:,.0f} docs/s), {removed} removed')
    out['end_to_end'] = {'seconds': seconds, 'docs_per_s': len(docs) / seconds,
                         'removed': removed, 'workers': args.workers, 'shards': args.shards}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)


if __name__ == '__main__':
    main()
