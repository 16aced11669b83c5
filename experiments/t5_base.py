"""T5.1.1 base (google/t5-v1_1-base shapes: 247,577,856 parameters).

python -m jaxlm.train --config experiments/t5_base.py --workdir runs/t5_base
"""

from experiments._t5 import t5_1_1_pretraining


def get_config():
    return t5_1_1_pretraining(num_layers=12, d_model=768, num_heads=12, num_kv_heads=12,
                              head_dim=64, mlp_dim=2048, remat_policy='save_dots_except_mlp')
