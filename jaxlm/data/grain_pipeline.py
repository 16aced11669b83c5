"""Deterministic, resumable grain pipeline producing packed LM batches.

From a corpus (`data.source = 'corpus'`): corpus -> documents -> by-document
train/eval split -> tokenizer (trained on train documents only) ->
`[bos] + tokens + [eos]` per document -> chunks of at most seq_len + 1 tokens ->
shuffled, per-process, first-fit packed batches.
Tokenization is eager in the main process: corpora here are at most ~25 MB.
From pre-tokenized shards (`data.source = 'shards'`, see jaxlm/data/shards.py) the
chunks are read lazily from ArrayRecord files; batching is the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import grain
import grain.experimental
import numpy as np
from absl import flags

from jaxlm.data import shards, sources, tokenizers
from jaxlm.data.chunking import chunk_spans

_SKIP_REASONS = ("empty", "invalid_utf8", "malformed_json", "missing_field")


@dataclasses.dataclass
class DataPipeline:
    tokenizer: tokenizers.Tokenizer
    # Infinite; get_state()/set_state() resume exactly. Checkpoint it with orbax via
    # grain.checkpoint.CheckpointSave / CheckpointRestore.
    train_iter: grain.DatasetIterator
    # This process's rows of fixed eval batches; identical on every build.
    eval_batches: list[dict[str, np.ndarray]]
    stats: dict


class _ChunkSource:
    """Random-access chunks over one flat token array.

    One array plus offsets (instead of a list of small arrays) keeps pickling to
    grain worker processes cheap.
    """

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.tokens, self.starts, self.ends = tokens, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        chunk = self.tokens[self.starts[index]:self.ends[index]]
        return {"inputs": chunk[:-1], "targets": chunk[1:]}


def _holdout_score(index: int, doc: str) -> float:
    """Stable pseudo-random number in [0, 1) from a document's index and content."""
    digest = hashlib.sha256(f"{index}\0{doc}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def load_documents(data_cfg: Any) -> tuple[list[str], list[str], dict]:
    """Reads the corpus and splits it by document into (train, eval, stats)."""
    paths = sources.resolve_corpus(
        data_cfg.corpus, data_cfg.data_dir or None, data_cfg.cache_dir or None
    )
    read_stats: dict = {}
    docs = list(sources.read_documents(paths, data_cfg.text_field, read_stats))
    skipped = {reason: read_stats[reason] for reason in _SKIP_REASONS}
    if len(docs) < 2:
        raise ValueError(
            f"corpus {data_cfg.corpus!r} has {len(docs)} usable document(s) after "
            f"filtering ({len(paths)} file(s); skipped: {skipped}; "
            f"first problems: {read_stats['examples']}); need at least 2 for a "
            "train/eval split"
        )
    if not 0.0 <= data_cfg.eval_fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {data_cfg.eval_fraction}")
    # The split ignores the seed: eval losses stay comparable across runs.
    scores = [_holdout_score(i, doc) for i, doc in enumerate(docs)]
    held_out = {i for i, s in enumerate(scores) if s < data_cfg.eval_fraction}
    if not held_out:
        held_out = {int(np.argmin(scores))}
    if len(held_out) == len(docs):
        held_out.discard(int(np.argmax(scores)))
    train = [d for i, d in enumerate(docs) if i not in held_out]
    held = [d for i, d in enumerate(docs) if i in held_out]
    stats = {
        "corpus": data_cfg.corpus,
        "files": [str(p) for p in paths],
        "documents": len(docs),
        "skipped": skipped,
        "skip_examples": read_stats["examples"],
        "train_documents": len(train),
        "eval_documents": len(held),
    }
    return train, held, stats


def make_tokenizer(
    data_cfg: Any, train_docs_fn: Callable[[], list[str]]
) -> tokenizers.Tokenizer:
    tok_cfg = data_cfg.tokenizer
    return tokenizers.build_tokenizer(
        tok_cfg.kind, tok_cfg.vocab_size, train_docs_fn, data_cfg.cache_dir or None,
        tok_cfg.path,
    )


def tokenizer_only(data_cfg: Any) -> tokenizers.Tokenizer:
    """The tokenizer `build_pipeline(data_cfg, ...)` uses, without building batches."""
    if data_cfg.get("source") == "shards":
        return shards.load_tokenizer(data_cfg.shards_dir)
    return make_tokenizer(data_cfg, lambda: load_documents(data_cfg)[0])


def _chunk(
    docs: Sequence[str], tokenizer: tokenizers.Tokenizer, seq_len: int
) -> tuple[_ChunkSource, int]:
    """Tokenizes documents into chunks; returns the source and the token count."""
    pieces = [np.asarray([tokenizer.bos_id, *tokenizer.encode(doc), tokenizer.eos_id], np.int32)
              for doc in docs]
    lengths = np.array([len(p) for p in pieces], np.int64)
    doc, begin, end = chunk_spans(lengths, seq_len)
    offsets = np.cumsum(lengths) - lengths
    tokens = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
    source = _ChunkSource(tokens, offsets[doc] + begin, offsets[doc] + end)
    return source, int(lengths.sum())


def to_model_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames grain's packing outputs to the model's batch keys."""
    segment_ids = batch["inputs_segment_ids"]
    # inputs and targets of a chunk have equal length, so packing must place them
    # identically; a mismatch would silently train on misaligned targets.
    if not (np.array_equal(segment_ids, batch["targets_segment_ids"])
            and np.array_equal(batch["inputs_positions"], batch["targets_positions"])):
        raise RuntimeError("packed inputs and targets have different segment layouts")
    return {
        "inputs": batch["inputs"].astype(np.int32),
        "targets": batch["targets"].astype(np.int32),
        "segment_ids": segment_ids.astype(np.int32),
        "positions": batch["inputs_positions"].astype(np.int32),
        "loss_mask": (segment_ids != 0).astype(np.float32),
    }


def pack_and_batch(
    ds: grain.IterDataset, length_struct: dict[str, int], batch_size: int, *, seed: int,
    shuffle_bins: bool,
    to_model_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = to_model_batch,
) -> grain.IterDataset:
    """First-fit packs examples into rows of `length_struct[feature]` tokens per feature."""
    ds = grain.experimental.FirstFitPackIterDataset(
        ds,
        length_struct=length_struct,
        num_packing_bins=batch_size,
        seed=seed,
        shuffle_bins=shuffle_bins,
    )
    return ds.batch(batch_size, drop_remainder=True).map(to_model_batch)


def _pack_and_batch(
    ds: grain.IterDataset, seq_len: int, batch_size: int, *, seed: int, shuffle_bins: bool
) -> grain.IterDataset:
    return pack_and_batch(ds, {"inputs": seq_len, "targets": seq_len}, batch_size, seed=seed,
                          shuffle_bins=shuffle_bins)


def local_batch_size(data_cfg: Any, process_index: int, process_count: int) -> int:
    """Rows of each global batch that this process produces (checking the arguments)."""
    seq_len, global_batch = data_cfg.seq_len, data_cfg.global_batch_size
    if seq_len < 1:
        raise ValueError(f"data.seq_len must be >= 1, got {seq_len}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(
            f"data.global_batch_size {global_batch} must be a positive multiple of "
            f"the process count {process_count}"
        )
    return global_batch // process_count


def data_shards(data_cfg: Any, process_index: int, process_count: int) -> tuple[int, range]:
    """(number of train data shards, the ones this process reads).

    The train stream is `data.num_shards` disjoint shards, each shuffled and packed on its own;
    the global batch is their rows in shard order. Each process reads only its own shards, so the
    global batches depend on num_shards but not on the process count (0: one per process)."""
    global_batch = data_cfg.global_batch_size
    num_shards = data_cfg.get("num_shards", 0) or process_count
    if num_shards % process_count or global_batch % num_shards:
        raise ValueError(
            f"data.num_shards {num_shards} must be a multiple of the process count "
            f"{process_count} and divide data.global_batch_size {global_batch}"
        )
    per_process = num_shards // process_count
    return num_shards, range(process_index * per_process, (process_index + 1) * per_process)


def build_pipeline(
    data_cfg: Any, *, seed: int, process_index: int = 0, process_count: int = 1
) -> DataPipeline:
    """Builds the train iterator and eval batches for one process of `process_count`."""
    seq_len, global_batch = data_cfg.seq_len, data_cfg.global_batch_size
    local_batch_size(data_cfg, process_index, process_count)
    num_shards, own_shards = data_shards(data_cfg, process_index, process_count)

    if data_cfg.get("source") == "shards":
        tokenizer, train_src, eval_src, stats = shards.load_sources(
            data_cfg.shards_dir, seq_len, data_cfg.eval_fraction)
    else:
        train_docs, eval_docs, stats = load_documents(data_cfg)
        tokenizer = make_tokenizer(data_cfg, lambda: train_docs)
        train_src, stats["train_tokens"] = _chunk(train_docs, tokenizer, seq_len)
        eval_src, stats["eval_tokens"] = _chunk(eval_docs, tokenizer, seq_len)
    stats["train_chunks"], stats["eval_chunks"] = len(train_src), len(eval_src)
    if len(train_src) < num_shards or not len(eval_src):
        raise ValueError(f"too few chunks for {num_shards} data shard(s): {stats}")

    parts = []
    for shard in own_shards:
        shuffle_seed = shard_seed(seed, shard)
        part = shuffled_shard(train_src, shuffle_seed, shard, num_shards).to_iter_dataset()
        parts.append(_pack_and_batch(part, seq_len, global_batch // num_shards,
                                     seed=shuffle_seed, shuffle_bins=True))
    train = parts[0] if len(parts) == 1 else grain.experimental.ZipIterDataset(parts).map(
        _concat_rows)
    train = with_workers(train, data_cfg.num_workers)

    eval_ds = grain.MapDataset.source(eval_src).repeat(None).to_iter_dataset()
    eval_iter = iter(_pack_and_batch(eval_ds, seq_len, global_batch, seed=0, shuffle_bins=False))
    eval_batches = process_rows(eval_iter, data_cfg.num_eval_batches, process_index,
                                process_count)
    return DataPipeline(tokenizer, iter(train), eval_batches, stats)


def _concat_rows(batches: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def shard_seed(seed: int, shard: int) -> int:
    """Distinct seed per data shard: slices are disjoint anyway, but independent orders avoid
    correlated batches across hosts."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def shuffled_shard(source: Any, seed: int, shard: int, num_shards: int) -> grain.MapDataset:
    """Shard `shard` of `num_shards` of `source`, reshuffled every epoch, endless."""
    return (grain.MapDataset.source(source)[shard::num_shards]
            .shuffle(seed=seed).repeat(None))


def with_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
    if num_workers <= 0:
        return ds
    # grain reads absl flags when starting workers; outside absl.app.run (tests,
    # notebooks) they are unparsed, so fall back to their defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))


def process_rows(global_batches: Any, num_batches: int, process_index: int,
                 process_count: int) -> list[dict[str, np.ndarray]]:
    """Eval: global batches in a fixed order (no shuffling), then this process's rows, so all
    processes together see exactly the same eval set on every build."""
    out = []
    for _ in range(num_batches):
        rows = {k: v[process_index::process_count] for k, v in next(global_batches).items()}
        out.append({k: np.ascontiguousarray(v) for k, v in rows.items()})
    return out
