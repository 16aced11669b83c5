"""Which parameters a run trains: all of them (full fine-tuning and pre-training), or LoRA
adapters over a frozen base (jaxlm/models/lora.py); and whether the train state keeps the
frozen initial parameters (`state['frozen']`): the LoRA base, and the reference model that
objectives such as DPO compare the policy against (`Objective.uses_reference`).

The frozen parameters are those of `config.init_params_from`: never trained, never checkpointed
(a run's checkpoints hold what it trains), and read again from there when a run resumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxlm.models import lora as lora_lib
from jaxlm.objectives.base import Objective


@dataclasses.dataclass(frozen=True)
class Tuning:
    lora: lora_lib.LoraConfig | None = None
    keep_frozen: bool = False

    @classmethod
    def from_config(cls, cfg: Any, objective: Objective) -> Tuning:
        lora = lora_lib.LoraConfig.from_config(cfg.lora)
        return cls(lora, lora is not None or objective.uses_reference)

    def model_params(self, params: Any, frozen: Any) -> Any:
        """The parameters the model runs with."""
        return params if self.lora is None else lora_lib.merge(frozen, params, self.lora)

    def describe(self, trainable: int, total: int) -> str:
        if self.lora is None:
            return f'full: all {total:,} parameters trained'
        return (f'LoRA rank {self.lora.rank}, alpha {self.lora.alpha:g} on '
                f'{self.lora.targets!r}: {trainable:,} trained parameters, '
                f'{trainable / total:.3%} of the {total:,} of the frozen base')


FULL = Tuning()


def checkpointed(state: dict[str, Any]) -> dict[str, Any]:
    """The part of the train state a checkpoint holds: all but the frozen parameters."""
    return {k: v for k, v in state.items() if k != 'frozen'}


def weights(state: dict[str, Any]) -> dict[str, Any]:
    """What the loss reads of the state: the trained parameters and the frozen ones (if any)."""
    return {k: state[k] for k in ('params', 'frozen') if k in state}
