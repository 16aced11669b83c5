"""Shared T5.1.1 settings: encoder-decoder, RMSNorm (eps 1e-6), gated GELU, no biases, untied
embeddings, 32 relative position buckets over 128 tokens shared per stack, span corruption
(noise density 0.15, mean span 3, 100 sentinels)."""

from jaxlm.config import default_config


def t5_config(**model):
    c = default_config()
    c.model.update(architecture='encoder_decoder', norm='rmsnorm', norm_eps=1e-6, mlp='geglu',
                   positions='t5_relative', use_bias=False, tie_embeddings=False,
                   relative_buckets=32, relative_max_distance=128, dropout_rate=0.0)
    c.model.update(**model)
    c.data.update(objective='span_corruption', noise_density=0.15, mean_noise_span_length=3.0,
                  extra_ids=100)
    return c


def t5_1_1_pretraining(**model):
    """T5.1.1 pretraining shapes: 32k SentencePiece + 100 sentinels padded to 32128, inputs 512
    and targets 114 tokens (T5's random_spans_helper), batch 128, inverse-sqrt-like warmup."""
    c = t5_config(vocab_size=32128, max_seq_len=512, **model)
    c.data.update(corpus='text_corpus_mix', inputs_len=512, seq_len=114, global_batch_size=128)
    c.data.tokenizer.vocab_size = 32000
    c.num_train_steps = 100_000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    c.optimizer.update(learning_rate=1e-3, warmup_steps=10_000, decay_steps=100_000,
                       weight_decay=0.0)
    return c
