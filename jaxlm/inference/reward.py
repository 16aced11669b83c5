"""Scoring conversations with a trained reward model (a `reward_model` run): what the RL recipes
serve as a learned reward, and what evaluates a policy against one.

A conversation is rendered and tokenized as the reward model saw its pairs in training (the run's
own chat template and tokenizer, BOS first: jaxlm/data/chat_format.py) and scored at its last
token. It must end with the assistant reply being scored. Batches are padded to the run's
`data.seq_len`, so one compiled forward serves every call; a conversation longer than that is
an error naming it, never a score of a cut text.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxlm.data import chat_format
from jaxlm.data.chat import ChatFormatError, ChatTemplate, Message
from jaxlm.errors import ConfigError
from jaxlm.inference.load import LoadedRun, load_run
from jaxlm.models import registry


@dataclasses.dataclass
class RewardModel:
    """A reward model run loaded once, to score many batches of conversations."""

    run: LoadedRun
    template: ChatTemplate
    scores_fn: Callable[..., jax.Array]  # jitted (params, batch) -> [B, L] scores

    @classmethod
    def load(cls, workdir: str, checkpoint: str | None = None) -> RewardModel:
        run = load_run(workdir, checkpoint)
        family = registry.family(run.config.model)
        if family.output != 'token_scalars':
            raise ConfigError(f'{workdir} is a {family.name!r} run, not a reward model (train '
                              "one with model.architecture = 'reward_model', data.objective = "
                              "'reward')")
        return cls(run, chat_format.run_template(run.config.data),
                   jax.jit(functools.partial(family.apply, run.model)))

    @property
    def seq_len(self) -> int:
        return self.run.config.data.seq_len

    def tokens(self, messages: Sequence[Message], where: str) -> np.ndarray:
        if not messages or messages[-1].role != 'assistant':
            raise ChatFormatError(f'{where}: a scored conversation ends with the assistant '
                                  'reply being scored')
        ids, _ = chat_format.conversation_ids(messages, self.template, self.run.tokenizer, where)
        if len(ids) > self.seq_len:
            raise ChatFormatError(f'{where}: {len(ids)} tokens, more than the reward model\'s '
                                  f'data.seq_len = {self.seq_len}')
        return ids

    def score(self, conversations: Sequence[Sequence[Message]],
              batch_size: int = 16) -> np.ndarray:
        """float32 [len(conversations)]: each conversation's score at its last token."""
        seqs = [self.tokens(m, f'conversation {i}') for i, m in enumerate(conversations)]
        out = []
        for begin in range(0, len(seqs), batch_size):
            chunk = seqs[begin:begin + batch_size]
            batch = _padded_batch(chunk, batch_size, self.seq_len)
            scores_BxL = np.asarray(self.scores_fn(self.run.params, batch))
            out.append(scores_BxL[np.arange(len(chunk)), [len(s) - 1 for s in chunk]])
        return np.concatenate(out) if out else np.zeros([0], np.float32)


def _padded_batch(seqs: Sequence[np.ndarray], rows: int, seq_len: int) -> dict[str, np.ndarray]:
    """One sequence per row, right-padded with segment id 0; `rows` rows (empty ones padded)."""
    batch = {k: np.zeros((rows, seq_len), np.int32)
             for k in ('inputs', 'segment_ids', 'positions')}
    for r, ids in enumerate(seqs):
        batch['inputs'][r, :len(ids)] = ids
        batch['segment_ids'][r, :len(ids)] = 1
        batch['positions'][r, :len(ids)] = np.arange(len(ids))
    return batch


def reward_scores(workdir: str, conversations: Sequence[Sequence[Message]],
                  checkpoint: str | None = None) -> np.ndarray:
    """The scores of `conversations` by the reward model trained in `workdir` (loads it each
    call: keep a `RewardModel.load(workdir)` to score repeatedly)."""
    return RewardModel.load(workdir, checkpoint).score(conversations)
