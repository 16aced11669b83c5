"""A ~1.2M-parameter LLaMA-style decoder that trains on Tiny Shakespeare on a CPU in minutes.

python -m jaxlm.train --config experiments/tiny.py --workdir runs/tiny
Variants (big_vision style): --config experiments/tiny.py:gpt2  (LayerNorm, GELU, learned
positions, tied embeddings, biases) or :byte (byte-level tokenizer).
"""

from jaxlm.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.num_train_steps = 600
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 200

    m = c.model
    m.vocab_size = 512
    m.num_layers = 4
    m.d_model = 128
    m.num_heads = 4
    m.num_kv_heads = 2
    m.head_dim = 32
    m.mlp_dim = 384
    m.max_seq_len = 128

    c.data.corpus = 'tiny_shakespeare'
    c.data.seq_len = 128
    c.data.global_batch_size = 16
    c.data.tokenizer.vocab_size = 512

    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.decay_steps = 600

    if arg == 'gpt2':
        m.update(norm='layernorm', mlp='gelu', positions='learned', tie_embeddings=True,
                 use_bias=True, num_kv_heads=4, mlp_dim=512)
    elif arg == 'byte':
        c.data.tokenizer.kind = 'byte'
        m.vocab_size = 259
    elif arg:
        raise ValueError(f'unknown variant {arg!r} of tiny.py (gpt2 | byte)')
    return c
