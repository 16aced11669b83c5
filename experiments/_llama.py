"""Shared LLaMA-family settings: RMSNorm, SwiGLU, RoPE, no biases, untied embeddings."""

from jaxlm.config import default_config


def llama_config(**model):
    c = default_config()
    c.model.update(norm='rmsnorm', norm_eps=1e-5, mlp='swiglu', positions='rope',
                   use_bias=False, tie_embeddings=False,
                   remat_policy='save_dots_except_mlp')
    c.model.update(**model)
    c.data.corpus = 'text_corpus_mix'
    c.data.seq_len = c.model.max_seq_len
    c.data.tokenizer.vocab_size = min(c.model.vocab_size, 32000)
    c.num_train_steps = 20000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.optimizer.update(learning_rate=3e-4, warmup_steps=2000, decay_steps=20000, b2=0.95,
                       weight_decay=0.1)
    return c
