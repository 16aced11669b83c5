"""Generation tasks through a run's chat template, as lm-evaluation-harness's
`--apply_chat_template` does: each request's context (few-shot examples included) becomes one
user turn, rendered with the template and its generation prompt, and the reply stops at the
end-of-turn marker. Log-likelihood requests are left as they are (their context/continuation
split would move the generation prompt's trailing newline into the continuation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxlm.data.chat import ChatTemplate, Message
from jaxlm.data.chat_format import END_OF_TURN


class ChatLM:
    """A JaxLM (jaxlm/evaluation/lm.py) whose generation requests are chat prompts. The lm adds
    BOS itself: for a template that writes BOS, evaluate with --noadd_bos."""

    def __init__(self, lm: Any, template: ChatTemplate) -> None:
        self.lm, self.template = lm, template

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lm, name)

    def _chat(self, requests: Sequence[tuple[str, dict[str, Any]]]
              ) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for context, kwargs in requests:
            prompt = self.template.render([Message('user', context)], add_generation_prompt=True)
            until = list(dict.fromkeys([*(kwargs.get('until') or []), END_OF_TURN]))
            out.append((prompt, {**kwargs, 'until': until}))
        return out

    def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        return self.lm.generate_until(self._chat(requests))

    def generate_until_truncated(self, requests: Sequence[tuple[str, dict[str, Any]]]
                                 ) -> list[bool]:
        return self.lm.generate_until_truncated(self._chat(requests))
