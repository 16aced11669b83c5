"""The seqio source: Tasks and a Mixture over the project's corpora, and the pipeline that feeds
one of them to the trainer in the grain pipeline's batch layout (jaxlm/data/pipeline.py). seqio
tokenizes, preprocesses and packs inside its tasks and feature converters, so the objective
picks the task kind and feature lengths, and only the process sharding is shared. Needs the
`seqio` extra (TensorFlow).

Registered by `register_tasks(data_cfg)`, for each corpus C of `jaxlm.data.sources.CORPORA`:
- `jaxlm_lm_C`: language modelling (tokenize, append EOS), for the decoder-only model;
- `jaxlm_span_corruption_C`: T5 span corruption (mean span 3, noise density 0.15 by default,
  from `data.*`) for the encoder-decoder: documents concatenated, split into raw chunks sized by
  T5's `random_spans_helper` for the `inputs` length, corrupted by the same NumPy code as the
  grain path (`span_corruption.corrupt_spans`, run through `tf.numpy_function` with seqio's
  per-example seeds), EOS appended;
- `jaxlm_lm_mix`: a Mixture of the LM tasks, Tiny Shakespeare at rate 3 and the text mix at 1.
The vocabulary is the project's SentencePiece model for `data.corpus` (trained and cached as the
corpus source does) as a `seqio.SentencePieceVocabulary` with `data.extra_ids` sentinels on top.
Splits are the corpus source's by-document train/eval split ('train', 'validation').
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import seqio
    import tensorflow as tf
except ImportError as e:  # the trainer checks first; this covers direct imports
    raise ImportError("jaxlm.data.seqio_tasks needs the seqio extra: pip install "
                      "'jaxlm[seqio]'") from e

from jaxlm.data import documents, sources, span_corruption
from jaxlm.data.corpus import load_documents
from jaxlm.data.pipeline import DataPipeline, local_batch_size, process_rows
from jaxlm.objectives.base import Objective

tf.config.set_visible_devices([], 'GPU')  # TF must not take accelerator memory from JAX

LM_PREFIX = 'jaxlm_lm_'
SPAN_PREFIX = 'jaxlm_span_corruption_'
MIXTURE = 'jaxlm_lm_mix'
MIXTURE_RATES = {'tiny_shakespeare': 3.0, 'text_corpus_mix': 1.0}


def _documents_source(data_cfg: Any, corpus: str) -> seqio.FunctionDataSource:
    """The corpus' documents, split by document exactly as the corpus source splits them."""
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one in-memory "file"; seqio shuffles examples
        cfg = data_cfg.copy_and_resolve_references()
        cfg.corpus = corpus
        train, held_out, _ = load_documents(cfg)
        docs = train if split == 'train' else held_out
        return tf.data.Dataset.from_tensor_slices({'text': tf.constant(docs, tf.string)})
    return seqio.FunctionDataSource(dataset_fn, splits=('train', 'validation'))


def _text_to_targets(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda x: {'targets': x['text']}, num_parallel_calls=tf.data.AUTOTUNE)


def _make_span_corruption(noise_density: float, mean_noise_span_length: float,
                          extra_ids: int) -> Callable[..., tf.data.Dataset]:
    def preprocess(ds: tf.data.Dataset, sequence_length: dict[str, int],
                   output_features: dict[str, seqio.Feature]) -> tf.data.Dataset:
        raw_len, _ = span_corruption.random_spans_helper(
            sequence_length['inputs'], noise_density, mean_noise_span_length)
        span_corruption.check_sentinels(raw_len, noise_density, mean_noise_span_length,
                                        extra_ids)
        vocab_size = output_features['targets'].vocabulary.vocab_size
        # T5's reduce_concat_tokens + split_tokens: the token stream in raw_len-token chunks.
        chunks = (ds.map(lambda x: x['targets']).unbatch()
                  .batch(raw_len, drop_remainder=True))

        def corrupt(tokens: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng(seed.astype(np.uint32))
            return span_corruption.corrupt_spans(tokens, rng, noise_density,
                                                 mean_noise_span_length, vocab_size)

        @seqio.map_over_dataset(num_seeds=1)
        def corrupt_tf(tokens: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            inputs, targets = tf.numpy_function(corrupt, [tokens, seed], [tf.int32, tf.int32])
            return {'inputs': tf.ensure_shape(inputs, [None]),
                    'targets': tf.ensure_shape(targets, [None])}

        return corrupt_tf(chunks.map(lambda t: tf.cast(t, tf.int32)))
    return preprocess


def project_tokenizer(data_cfg: Any) -> Any:
    """The SentencePiece tokenizer the grain path trains (and caches) for `data_cfg`."""
    if data_cfg.tokenizer.kind != 'sentencepiece':
        raise ValueError("seqio tasks use the project's SentencePiece model: set "
                         f"data.tokenizer.kind = 'sentencepiece' (got {data_cfg.tokenizer.kind!r})")
    return documents.tokenizer_only(data_cfg)


def register_tasks(data_cfg: Any, tokenizer: Any = None) -> list[str]:
    """(Re-)registers the tasks and the mixture for this data config (and its tokenizer,
    default `project_tokenizer(data_cfg)`); returns their names."""
    tokenizer = tokenizer or project_tokenizer(data_cfg)
    vocab = seqio.SentencePieceVocabulary(str(tokenizer.model_path),
                                          extra_ids=data_cfg.extra_ids)
    lm_features = {'targets': seqio.Feature(vocab, add_eos=True, dtype=tf.int32)}
    span_features = {'inputs': seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
                     'targets': seqio.Feature(vocab, add_eos=True, dtype=tf.int32)}
    span = _make_span_corruption(data_cfg.noise_density, data_cfg.mean_noise_span_length,
                                 data_cfg.extra_ids)
    names = []
    for corpus in sources.CORPORA:
        source = _documents_source(data_cfg, corpus)
        for name, features, preprocessors in (
                (LM_PREFIX + corpus, lm_features,
                 [_text_to_targets, seqio.preprocessors.tokenize,
                  seqio.preprocessors.append_eos_after_trim]),
                (SPAN_PREFIX + corpus, span_features,
                 [_text_to_targets, seqio.preprocessors.tokenize, span,
                  seqio.preprocessors.append_eos_after_trim])):
            seqio.TaskRegistry.remove(name)
            seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors,
                                   output_features=features)
            names.append(name)
    seqio.MixtureRegistry.remove(MIXTURE)
    seqio.MixtureRegistry.add(MIXTURE, [(LM_PREFIX + c, r) for c, r in MIXTURE_RATES.items()])
    return names + [MIXTURE]


def _to_model_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """seqio's feature-converter names -> the trainer's batch keys (grain's layout)."""
    out = {'inputs': batch['decoder_input_tokens'], 'targets': batch['decoder_target_tokens'],
           'segment_ids': batch['decoder_segment_ids'], 'positions': batch['decoder_positions'],
           'loss_mask': batch['decoder_loss_weights'].astype(np.float32)}
    if 'encoder_input_tokens' in batch:
        out.update(encoder_inputs=batch['encoder_input_tokens'],
                   encoder_segment_ids=batch['encoder_segment_ids'],
                   encoder_positions=batch['encoder_positions'])
    return {k: np.ascontiguousarray(v, np.float32 if k == 'loss_mask' else np.int32)
            for k, v in out.items()}


class SeqioIterator:
    """Model batches from a seqio dataset. Checkpointed through grain's handler as the number
    of batches consumed: seqio's shuffling and per-example seeds are fixed by the run's seed, so
    the restored dataset replays the same stream and skips that many batches."""

    def __init__(self, make_dataset: Callable[[], tf.data.Dataset]):
        self._make_dataset = make_dataset
        self._consumed = 0
        self._iter: Any = None

    def __iter__(self) -> SeqioIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iter is None:
            self._iter = self._make_dataset().skip(self._consumed).as_numpy_iterator()
        batch = next(self._iter)
        self._consumed += 1
        return _to_model_batch(batch)

    def get_state(self) -> bytes:
        return json.dumps({'batches_consumed': self._consumed}).encode()

    def set_state(self, state: bytes) -> None:
        self._consumed = int(json.loads(state)['batches_consumed'])
        self._iter = None

    def start_prefetch(self) -> None:
        """grain's checkpoint handler calls this after `set_state`; batches are read lazily."""


def _feature_lengths(task: str, objective: Objective, data_cfg: Any) -> dict[str, int]:
    """seqio's task feature lengths for the objective: 'inputs' only when it feeds an encoder."""
    encoder = 'encoder_inputs' in objective.model_inputs()
    if encoder != task.startswith(SPAN_PREFIX):
        raise ValueError(f'data.task {task!r} does not fit data.objective = {objective.name!r}: '
                         f'span corruption tasks ({SPAN_PREFIX}*) feed the encoder-decoder, LM '
                         'tasks the decoder')
    if encoder:
        return {'inputs': data_cfg.inputs_len, 'targets': data_cfg.seq_len}
    return {'targets': data_cfg.seq_len}


def build_seqio_pipeline(data_cfg: Any, objective: Objective, *, seed: int,
                         process_index: int = 0, process_count: int = 1) -> DataPipeline:
    """The trainer's data from seqio task `data.task` for `objective`: packed by seqio's Decoder
    (LM) or EncDec (span corruption) feature converter, this process's shard of the train split,
    and eval batches from the validation split (global batches, then this process's rows)."""
    d = data_cfg
    batch = local_batch_size(d, process_index, process_count)
    tokenizer = project_tokenizer(d)
    names = register_tasks(d, tokenizer)
    if d.task not in names:
        raise ValueError(f'data.task {d.task!r} is not a registered seqio task (known: {names})')
    lengths = _feature_lengths(d.task, objective, d)
    converter = (seqio.EncDecFeatureConverter(pack=True) if 'inputs' in lengths
                 else seqio.DecoderFeatureConverter(pack=True))

    def dataset(split: str, shard: seqio.ShardInfo | None, shuffle: bool,
                rows: int) -> tf.data.Dataset:
        ds = seqio.get_dataset(d.task, task_feature_lengths=lengths, dataset_split=split,
                               shuffle=shuffle, seed=seed, num_epochs=None,
                               shard_info=shard, feature_converter=converter)
        return ds.batch(rows, drop_remainder=True)

    shard = seqio.ShardInfo(index=process_index, num_shards=process_count)
    train_iter = SeqioIterator(lambda: dataset('train', shard, True, batch).prefetch(2))
    eval_iter = map(_to_model_batch, dataset('validation', None, False,
                                             d.global_batch_size).as_numpy_iterator())
    eval_batches = process_rows(eval_iter, d.num_eval_batches, process_index, process_count)
    stats = {'source': 'seqio', 'task': d.task, 'feature_lengths': lengths}
    return DataPipeline(tokenizer, train_iter, eval_batches, stats)
