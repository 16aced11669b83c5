"""DPO (sigmoid loss, beta = 0.1, as TRL) on Anthropic HH-RLHF (harmless-base), starting from the
chat SFT run of experiments/sft_gsm8k.py, which is also the frozen reference model.

python -m jaxlm.train --config experiments/sft_gsm8k.py --workdir runs/sft_gsm8k
python -m jaxlm.train --config experiments/dpo_hh.py:runs/sft_gsm8k --workdir runs/dpo_hh
    [--config.preference.loss_type=ipo] [--config.data.mixture=case_preference]

The argument after ':' (default runs/sft_gsm8k) is the starting run's workdir: its latest
checkpoint becomes `init_params_from` (the policy's initial parameters and the reference's) and
its own tokenizer copy is used; the model is sft_gsm8k.py's. To start elsewhere, override
`--config.init_params_from`, `--config.data.tokenizer.*` and `--config.model.*` to match.
Logged every `log_every_steps`, and on the held-out 10% of the pairs at every evaluation
(`eval_` prefix), under TRL's names: rewards/chosen, rewards/rejected, rewards/accuracies (the
share of pairs whose implicit reward ranks chosen first; 0 at step 0, where every reward is 0),
rewards/margins, logps/chosen, logps/rejected. Pairs that do not fit seq_len together are
dropped and counted in the data stats. The synthetic `case_preference` set (lower-case replies
preferred) is learnable in a few dozen steps.
"""

import os

from experiments import sft_gsm8k


def get_config(arg: str | None = None):
    start = arg or 'runs/sft_gsm8k'
    c = sft_gsm8k.get_config()
    c.init_params_from = os.path.join(start, 'checkpoints')
    c.num_train_steps = 200
    c.log_every_steps = 20
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 100

    d = c.data
    d.mixture = 'hh_rlhf:1'
    d.objective = 'dpo'
    d.truncation = 'drop'
    d.tokenizer.path = os.path.join(start, 'tokenizer.model')
    d.seq_len = 512
    d.eval_fraction = 0.1
    d.num_eval_batches = 6

    c.preference.update(beta=0.1, loss_type='sigmoid', label_smoothing=0.0)
    o = c.optimizer
    # TRL's default 5e-7 suits billion-parameter models; a CPU-sized one needs larger steps.
    o.learning_rate = 5e-4
    o.warmup_steps = 10
    o.decay_steps = 200
    o.weight_decay = 0.0
    return c
