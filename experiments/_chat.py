"""The CPU-sized chat decoder the post-training recipes share (sft_gsm8k.py, sft_mixture.py,
reward_hh.py): ~1M parameters, LLaMA-style, on 2 CPU cores in minutes."""


def chat_model(c, vocab_size: int, max_seq_len: int = 512) -> None:
    """Sets the model of run config `c` and the size of the tokenizer jaxlm trains for it."""
    c.model.update(vocab_size=vocab_size, num_layers=4, d_model=128, num_heads=4,
                   num_kv_heads=2, head_dim=32, mlp_dim=384, max_seq_len=max_seq_len)
    c.data.tokenizer.vocab_size = vocab_size
