"""Pre-trains on the token shards that the default curation writes.

python -m data_pipelines.curate --config data_pipelines/configs/text_corpus_mix.py \
    --output runs/curated/text_corpus_mix
python -m jaxlm.train --config experiments/curated_shards.py --workdir runs/curated_tiny
Another shards directory: --config experiments/curated_shards.py:/path/to/shards

The tokenizer is the one the shards were written with (kept in the shards directory and copied
into the workdir), so the model's vocabulary is taken from the shards' index.json.
"""

import json
import os

from jaxlm.config import default_config
from jaxlm.data import shards

DEFAULT_SHARDS_DIR = 'runs/curated/text_corpus_mix/shards'
DEFAULT_VOCAB_SIZE = 8192  # the default curation's tokenizer.vocab_size


def _vocab_size(shards_dir: str) -> int:
    index_path = os.path.join(shards_dir, shards.INDEX_FILE)
    if not os.path.exists(index_path):  # not curated yet: the training run reports it
        return DEFAULT_VOCAB_SIZE
    with open(index_path) as f:
        return json.load(f)['tokenizer']['vocab_size']


def get_config(arg: str | None = None):
    shards_dir = arg or DEFAULT_SHARDS_DIR
    c = default_config()
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 250

    m = c.model
    m.vocab_size = _vocab_size(shards_dir)
    m.num_layers = 4
    m.d_model = 256
    m.num_heads = 8
    m.num_kv_heads = 4
    m.head_dim = 32
    m.mlp_dim = 768
    m.max_seq_len = 256

    c.data.source = 'shards'
    c.data.shards_dir = shards_dir
    c.data.seq_len = 256
    c.data.global_batch_size = 16
    c.data.eval_fraction = 0.01

    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.decay_steps = 2000
    return c
