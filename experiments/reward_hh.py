"""A CPU-sized reward model on Anthropic HH-RLHF (harmless-base; jaxlm/data/sets/hh_rlhf.py):
a decoder backbone with a scalar head (`reward_model`), Bradley-Terry loss on chosen/rejected
pairs, held-out pairwise accuracy reported as `eval_accuracy` at every evaluation.

python -m jaxlm.train --config experiments/reward_hh.py --workdir runs/reward_hh
python -m jaxlm.train --config experiments/reward_hh.py:synthetic --workdir runs/reward_case

Each pair is one row (prompt + chosen, prompt + rejected as two segments); pairs longer than
seq_len together are dropped and counted (`train_too_long_pairs` in the data stats), as are pairs
whose replies are identical. 10% of the pairs are held out by a fixed seed. The SentencePiece
tokenizer is trained on the train pairs' texts with the ChatML markers as symbols. Variant
`:synthetic` trains on `case_preference` (lower-case replies preferred), which a model this size
learns in a few dozen steps. Score conversations with the trained model from Python:
`jaxlm.inference.reward.reward_scores(workdir, conversations)`.
"""

from experiments._chat import chat_model
from jaxlm.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.num_train_steps = 300
    c.log_every_steps = 25
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 100

    c.model.architecture = 'reward_model'
    chat_model(c, vocab_size=2048)

    d = c.data
    d.source = 'mixture'
    d.mixture = 'hh_rlhf:1'
    d.objective = 'reward'
    d.truncation = 'drop'
    d.seq_len = 512
    d.global_batch_size = 16
    d.eval_fraction = 0.1
    d.num_eval_batches = 10

    o = c.optimizer
    o.learning_rate = 1e-3
    o.warmup_steps = 20
    o.decay_steps = 300
    if arg == 'synthetic':
        c.num_train_steps, o.decay_steps = 60, 60
        c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 10, 10, 60
        d.mixture, d.seq_len, c.model.max_seq_len = 'case_preference:1', 128, 128
        d.tokenizer.kind, c.model.vocab_size = 'byte', 264
        o.learning_rate = 3e-3
    elif arg:
        raise ValueError(f'unknown variant {arg!r} of reward_hh.py (synthetic)')
    return c
