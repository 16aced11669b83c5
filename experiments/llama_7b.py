"""LLaMA 2 7B shape (6,738,415,616 parameters, as the public checkpoint): 32 x 4096, 32 heads,
SwiGLU 11008, vocabulary 32000, untied embeddings, context 4096."""

from experiments._llama import llama_config


def get_config():
    c = llama_config(vocab_size=32000, num_layers=32, d_model=4096, num_heads=32, num_kv_heads=32,
                     head_dim=128, mlp_dim=11008, max_seq_len=4096, rope_theta=10000.0)
    c.data.global_batch_size = 1024
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.model.remat_policy = 'full'  # MaxText's default at this size: activations dominate memory
    return c
