"""Built-in tasks; importing this module registers each (one task family per file)."""

from jaxlm.evaluation.tasks import (  # noqa: F401
    arc,
    gsm8k,
    hellaswag,
    lambada,
    mmlu,
    perplexity,
    piqa,
    winogrande,
)
