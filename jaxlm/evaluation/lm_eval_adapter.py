"""A jaxlm model as an lm-evaluation-harness `LM` (the harness is the optional `eval` extra).

Importing this module registers the model under the name `jaxlm`, so the harness's own CLI can
evaluate a training run:

    python -m jaxlm.evaluation.lm_eval_adapter run --model jaxlm \
        --model_args pretrained=runs/tiny --tasks hellaswag

and Python code can hand an existing model to `lm_eval.simple_evaluate`:

    lm_eval.simple_evaluate(model=JaxLMAdapter(lm=jax_lm), tasks=[...])

All three request types are answered by `jaxlm.evaluation.lm.JaxLM`, which already follows the
harness's conventions (context/continuation split, left truncation, rolling windows); this
module only unpacks `Instance.args`, normalises generation arguments as the harness's own models
do, and feeds the harness's request cache. Nothing else in jaxlm imports lm_eval.
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs

from jaxlm.evaluation.lm import DEFAULT_MAX_GEN_TOKS, JaxLM

log = logging.getLogger(__name__)


@register_model('jaxlm')
class JaxLMAdapter(LM):
    """lm-evaluation-harness model backed by a `JaxLM`.

    Built either from a training run, `JaxLMAdapter(pretrained=workdir)` (what
    `--model jaxlm --model_args pretrained=DIR[,checkpoint=...,batch_size=...]` does), or
    around a model already in memory, `JaxLMAdapter(lm=jax_lm)`.
    """

    def __init__(self, pretrained: str | None = None, *, lm: JaxLM | None = None,
                 checkpoint: str | None = None, batch_size: int | str | None = None,
                 max_length: int | None = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                 **ignored: Any) -> None:
        super().__init__()
        # The harness passes device/max_batch_size to every model it builds from a name.
        ignored = {k: v for k, v in ignored.items() if v is not None}
        if ignored:
            log.warning('jaxlm: ignoring model arguments %s', sorted(ignored))
        if (pretrained is None) == (lm is None):
            raise ValueError('give exactly one of pretrained=<jaxlm workdir> or lm=<JaxLM>')
        if isinstance(batch_size, str):  # from a model_args string; 'auto' keeps the default
            batch_size = int(batch_size) if batch_size.isdigit() else None
        if lm is None:
            kwargs: dict[str, Any] = {'max_length': int(max_length) if max_length else None}
            if batch_size:
                kwargs['batch_size'] = int(batch_size)
            lm = JaxLM.from_workdir(str(pretrained), checkpoint, **kwargs)
        else:
            if batch_size:
                lm.batch_size = int(batch_size)
            if max_length:
                lm.max_length = int(max_length)
        self.lm = lm
        self.max_gen_toks = int(max_gen_toks)

    @property
    def tokenizer_name(self) -> str:
        return type(self.lm.tokenizer).__name__

    # -- the harness's three request types ----------------------------------------------------

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        pairs = [(str(r.args[0]), str(r.args[1])) for r in requests]
        results = self.lm.loglikelihood(pairs)
        for pair, res in zip(pairs, results, strict=True):
            self.cache_hook.add_partial('loglikelihood', pair, res)
        return results

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        texts = [str(r.args[0]) for r in requests]
        results = self.lm.loglikelihood_rolling(texts)
        for text, res in zip(texts, results, strict=True):
            self.cache_hook.add_partial('loglikelihood_rolling', (text,), res)
        return results

    def generate_until(self, requests: list[Instance]) -> list[str]:
        calls = []
        for r in requests:
            context, gen_kwargs = r.args[0], dict(r.args[1] or {})
            # Same normalisation as the harness's own models: max_gen_toks aliases, a string
            # `until`, do_sample=False meaning temperature 0.
            kw = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = kw.get('until') or []
            calls.append((str(context), {
                'until': [until] if isinstance(until, str) else list(until),
                'max_gen_toks': int(kw['max_gen_toks']),
                'temperature': float(kw.get('temperature') or 0.0)
                if kw.get('do_sample') else 0.0,
            }))
        outputs = self.lm.generate_until(calls)
        for r, out in zip(requests, outputs, strict=True):
            self.cache_hook.add_partial('generate_until', r.args, out)
        return outputs


def main() -> None:
    """The harness's own CLI with `--model jaxlm` available:
    `python -m jaxlm.evaluation.lm_eval_adapter run --model jaxlm --model_args pretrained=DIR
    --tasks hellaswag` (the harness has no plugin discovery, so the class must be imported
    before its CLI parses `--model`)."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == '__main__':
    main()
