"""Llama 3.2 1B shape (1,235,814,400 parameters, as the public checkpoint): 16 x 2048, 32 query /
8 KV heads, SwiGLU 8192, vocabulary 128256, tied embeddings, rope_theta 500000, and Llama 3.2's
long-context RoPE frequency scaling (rope_scaling llama3: factor 32, low_freq_factor 1,
high_freq_factor 4, original_max_position_embeddings 8192, as its config.json; it changes no
parameter, only the rotation frequencies)."""

from experiments._llama import llama_config


def get_config():
    c = llama_config(vocab_size=128256, num_layers=16, d_model=2048, num_heads=32, num_kv_heads=8,
                     head_dim=64, mlp_dim=8192, max_seq_len=2048, rope_theta=500000.0,
                     tie_embeddings=True)
    c.model.rope_scaling.update(kind='llama3', factor=32.0, low_freq_factor=1.0,
                                high_freq_factor=4.0, original_max_seq_len=8192)
    c.data.global_batch_size = 256
    return c
