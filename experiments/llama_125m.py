"""A 134M LLaMA-style model at GPT-3 Small's shape (12 x 768, 12 heads, SwiGLU 2048, vocabulary
32000, untied). There is no public LLaMA of this size; the count (134,105,856) is pinned by the
closed form in tests."""

from experiments._llama import llama_config


def get_config():
    c = llama_config(vocab_size=32000, num_layers=12, d_model=768, num_heads=12, num_kv_heads=12,
                     head_dim=64, mlp_dim=2048, max_seq_len=2048, rope_theta=10000.0)
    c.data.global_batch_size = 256
    return c
