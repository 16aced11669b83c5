"""GPT-2 small (124,439,808 parameters, as the public checkpoint): LayerNorm with biases, GELU,
learned positions, tied embeddings, 12 x 768, context 1024, vocabulary 50257."""

from jaxlm.config import default_config


def get_config():
    c = default_config()
    c.model.update(vocab_size=50257, num_layers=12, d_model=768, num_heads=12, num_kv_heads=12,
                   head_dim=64, mlp_dim=3072, max_seq_len=1024, norm='layernorm',
                   norm_eps=1e-5, mlp='gelu', positions='learned', tie_embeddings=True,
                   use_bias=True, remat_policy='save_dots_except_mlp')
    c.data.seq_len = 1024
    c.data.global_batch_size = 512
    c.data.corpus = 'text_corpus_mix'
    c.data.tokenizer.vocab_size = 50257
    c.num_train_steps = 20000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.optimizer.update(learning_rate=6e-4, warmup_steps=700, decay_steps=20000,
                       weight_decay=0.1, b2=0.95)
    return c
