"""A ~2M-parameter T5.1.1-style encoder-decoder trained with span corruption on Tiny Shakespeare:
trains on a CPU in minutes.

python -m jaxlm.train --config experiments/t5_tiny.py --workdir runs/t5_tiny
Variant :seqio reads the same corpus through the seqio task `jaxlm_span_corruption_tiny_shakespeare`
(needs the `seqio` extra; jaxlm/data/seqio_tasks.py).
"""

from experiments._t5 import t5_config


def get_config(arg: str | None = None):
    c = t5_config()
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 200

    m = c.model
    # 512 SentencePiece pieces + 100 sentinels (data.extra_ids), padded to a multiple of 128.
    m.vocab_size = 640
    m.num_layers = 3  # in each stack
    m.d_model = 128
    m.num_heads = 4
    m.num_kv_heads = 4
    m.head_dim = 32
    m.mlp_dim = 384
    m.max_seq_len = 128

    d = c.data
    d.corpus = 'tiny_shakespeare'
    d.inputs_len = 128  # 141 raw tokens -> 128 encoder tokens, 29 targets (T5's helper)
    d.seq_len = 32
    d.global_batch_size = 16
    d.tokenizer.vocab_size = 512

    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 40
    c.optimizer.decay_steps = 400

    if arg == 'seqio':
        d.source = 'seqio'
        d.task = 'jaxlm_span_corruption_tiny_shakespeare'
    elif arg:
        raise ValueError(f'unknown variant {arg!r} of t5_tiny.py (seqio)')
    return c
