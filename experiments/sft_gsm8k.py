"""Supervised fine-tuning of a CPU-sized decoder on GSM8K chain-of-thought conversations
(jaxlm/data/sets/gsm8k.py: reasoning, then "The answer is N."), in minutes on a laptop CPU.

python -m jaxlm.train --config experiments/sft_gsm8k.py --workdir runs/sft_gsm8k
python -m jaxlm.eval --workdir runs/sft_gsm8k --tasks gsm8k --num_fewshot 0 --limit 50 --chat
python -m jaxlm.sample --workdir runs/sft_gsm8k --chat --temperature 0 \\
    --prompt "Tom has 3 apples and buys 5 more. How many apples does he have?"

The model starts from scratch here (a small model's pre-training would take longer than its
SFT); set `--config.init_params_from` to a run's checkpoints directory (with the same tokenizer)
to fine-tune a pre-trained one. Its SentencePiece tokenizer is trained on the GSM8K train
conversations, with ChatML's `<|im_start|>` / `<|im_end|>` as symbols, and kept in the run
directory for sampling and evaluation. Conversations longer than seq_len are dropped (counted in
the data stats).

Measured (2 shared CPU cores; `jaxlm.eval --chat --num_fewshot 0 --limit 50`, the 50 GSM8K test
problems here): the strict regex of the gsm8k task parses 0/50 generations of the untrained
model, 30/50 after 600 steps and 42/50 after 900; 5 of 6 greedy chat samples at step 900 end
their turn with `<|im_end|>` (4 of 6 at step 600; the others loop to --max_new_tokens). Exact
match stays 0: a 1M-parameter model learns the format, not the arithmetic.
"""

from experiments._chat import chat_model
from jaxlm.config import default_config


def get_config(arg: str | None = None):
    del arg
    c = default_config()
    c.num_train_steps = 900
    c.log_every_steps = 50
    c.eval_every_steps = 300
    c.checkpoint_every_steps = 300

    # max_seq_len 512 > seq_len: RoPE, and evaluation generates up to 256 tokens after the prompt
    chat_model(c, vocab_size=1024)

    d = c.data
    d.source = 'mixture'
    d.mixture = 'gsm8k:1'
    d.objective = 'sft'
    d.truncation = 'drop'
    d.seq_len = 256
    d.global_batch_size = 16
    d.eval_fraction = 0.02
    d.num_eval_batches = 2

    o = c.optimizer
    o.learning_rate = 3e-3
    o.warmup_steps = 30
    o.decay_steps = 600  # then 300 steps at the final learning rate (3e-4)
    return c
