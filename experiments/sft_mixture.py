"""Instruction tuning of a CPU-sized decoder on a weighted mixture of chat data: GSM8K
chain-of-thought, FastChat's conversations (with the MT-Bench / Vicuna-bench reference answers),
Self-Instruct's human-written tasks and AlpacaEval's GPT-4 answers.

python -m jaxlm.train --config experiments/sft_mixture.py --workdir runs/sft_mixture
python -m jaxlm.sample --workdir runs/sft_mixture --chat --prompt "Give me three tips for sleep."

LICENCE: alpaca_eval is CC BY-NC 4.0, NON-COMMERCIAL (and GPT-4 outputs, so OpenAI's terms may
apply): a model trained with this mixture must not be used commercially. Drop it from
`data.mixture` for a commercially usable run; the run's data stats list it under `noncommercial`.
The other three are MIT (GSM8K) and Apache-2.0 (FastChat, whose reference answers are GPT-4
outputs too; Self-Instruct).

The train split holds as many records as the four train splits together, each dataset's share
its weight's (the small sets repeat): see jaxlm/data/mixture.py. Conversations longer than
seq_len keep their start (`data.truncation = 'truncate'`, counted in the data stats).
Fine-tune a pre-trained run with `--config.init_params_from=<its checkpoints directory>` (and its
tokenizer: `--config.data.tokenizer.path=<its tokenizer.model>`).
"""

from experiments._chat import chat_model
from jaxlm.config import default_config


def get_config(arg: str | None = None):
    del arg
    c = default_config()
    c.num_train_steps = 1000
    c.log_every_steps = 50
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 250

    chat_model(c, vocab_size=2048)

    d = c.data
    d.source = 'mixture'
    d.mixture = 'gsm8k:0.4,fastchat:0.2,self_instruct:0.2,alpaca_eval:0.2'
    d.objective = 'sft'
    d.truncation = 'truncate'
    d.seq_len = 512
    d.global_batch_size = 8
    d.eval_fraction = 0.02
    d.num_eval_batches = 2

    o = c.optimizer
    o.learning_rate = 2e-3
    o.warmup_steps = 50
    o.decay_steps = 1000
    return c
