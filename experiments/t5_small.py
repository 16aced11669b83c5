"""T5.1.1 small (google/t5-v1_1-small shapes: 76,961,152 parameters).

python -m jaxlm.train --config experiments/t5_small.py --workdir runs/t5_small
"""

from experiments._t5 import t5_1_1_pretraining


def get_config():
    return t5_1_1_pretraining(num_layers=8, d_model=512, num_heads=6, num_kv_heads=6,
                              head_dim=64, mlp_dim=1024)
