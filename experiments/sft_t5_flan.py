"""Instruction tuning of a tiny T5.1.1-style encoder-decoder, FLAN style (inputs -> targets), on
GSM8K chain-of-thought conversations (jaxlm/data/sets/gsm8k.py: reasoning, then "The answer is
N."): the question is the encoder's input, the worked answer the decoder's target
(jaxlm/objectives/seq2seq.py). About 10 minutes on a 2-core CPU (longer when shared).

python -m jaxlm.train --config experiments/sft_t5_flan.py --workdir runs/sft_t5_flan
python -m jaxlm.sample --workdir runs/sft_t5_flan --temperature 0 \\
    --prompt "Tom has 3 apples and buys 5 more. How many apples does he have?"
python -m jaxlm.eval --workdir runs/sft_t5_flan --tasks gsm8k --num_fewshot 0 --limit 20

Sampling and evaluation give the prompt to the encoder and decode from the decoder's start
token. The model starts from scratch (set `--config.init_params_from` to a span-corruption run
with the same tokenizer to fine-tune a pre-trained T5). Its SentencePiece tokenizer is trained on
the GSM8K train conversations and kept in the run directory. Examples whose question or answer
does not fit (inputs_len / seq_len tokens) are dropped, and counted in the data stats.
"""

from experiments._t5 import t5_config


def get_config(arg: str | None = None):
    del arg
    c = t5_config()
    c.num_train_steps = 1000
    c.log_every_steps = 50
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 250

    m = c.model
    m.vocab_size = 1024
    m.num_layers = 2  # in each stack
    m.d_model = 128
    m.num_heads = 4
    m.num_kv_heads = 4
    m.head_dim = 32
    m.mlp_dim = 256
    m.max_seq_len = 256  # relative positions; evaluation decodes up to 256 answer tokens

    d = c.data
    d.source = 'mixture'
    d.mixture = 'gsm8k:1'
    d.objective = 'seq2seq'
    d.truncation = 'drop'
    d.inputs_len = 160  # the question (encoder)
    d.seq_len = 192  # the answer (decoder)
    d.global_batch_size = 16
    d.eval_fraction = 0.02
    d.num_eval_batches = 2
    d.tokenizer.vocab_size = 1024

    o = c.optimizer
    o.learning_rate = 3e-3
    o.warmup_steps = 40
    o.decay_steps = 1000
    return c
