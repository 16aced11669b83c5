"""Preference pairs as packed rows: one forward pass scores both sides of a pair.

A pair (prompt, chosen, rejected) is one row: segment 1 is the prompt with the chosen reply,
segment 2 the prompt with the rejected reply, positions restarting at 0, so segment masking
keeps the two apart and a row never splits a pair across data shards. Beside the decoder's
inputs a row carries:
- `targets`: the next token of each position within its segment (0 after a segment's last);
- `chosen_mask` / `rejected_mask`: the positions whose target is a token of the final reply
  (what DPO sums log-probabilities over);
- `chosen_last` / `rejected_last`: one-hot at each sequence's last token (where a reward model's
  score is read, as Hugging Face's sequence classifiers read the last non-padding token).
A row of padding (none are made here) has no pair: every mask is 0, so it weighs nothing.

Bad input is a counted skip: a pair whose chosen and rejected replies tokenize the same
(`identical_pairs`), and a pair whose two sequences do not fit in `seq_len` together
(`too_long_pairs`: dropped, never cut, so no reply is scored on a prefix; `data.truncation`
must be 'drop'). A prompt that is not a valid conversation is a ChatFormatError naming the record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm.data.chat import ChatTemplate, Message
from jaxlm.data.chat_format import conversation_ids, run_template
from jaxlm.data.records import Preference
from jaxlm.data.sources import DataError
from jaxlm.errors import ConfigError
from jaxlm.models.family import Field
from jaxlm.objectives.base import DataTransform

FIELDS = ('inputs', 'segment_ids', 'positions', 'targets', 'chosen_mask', 'rejected_mask',
          'chosen_last', 'rejected_last')
_FLOAT_FIELDS = ('chosen_mask', 'rejected_mask', 'chosen_last', 'rejected_last')


@dataclasses.dataclass(frozen=True)
class PairSide:
    """One side of a pair: its token ids and the [start, end) span of its final reply."""

    tokens: np.ndarray
    start: int
    end: int

    @property
    def reply(self) -> np.ndarray:
        return self.tokens[self.start:self.end]


def tokenize_reply(prompt: Sequence[Message], reply: str, template: ChatTemplate,
                   tokenizer: Any, where: str) -> PairSide:
    """The prompt with `reply` as the final assistant turn, checked, rendered and tokenized as
    SFT tokenizes a conversation (BOS first); the span is the final turn's tokens, its
    end-of-turn marker included."""
    tokens, mask = conversation_ids([*prompt, Message('assistant', reply)], template, tokenizer,
                                    where)
    end = int(np.flatnonzero(mask)[-1]) + 1
    before = np.flatnonzero(~mask[:end])
    return PairSide(tokens, int(before[-1]) + 1 if before.size else 0, end)


def pair_row(chosen: PairSide, rejected: PairSide, seq_len: int) -> dict[str, np.ndarray]:
    """The row of one pair (both sequences must fit: len(chosen) + len(rejected) <= seq_len)."""
    row = {k: np.zeros(seq_len, np.float32 if k in _FLOAT_FIELDS else np.int32) for k in FIELDS}
    at = 0
    for segment, (side, seq) in enumerate((('chosen', chosen), ('rejected', rejected)), 1):
        n = len(seq.tokens)
        span = slice(at, at + n)
        row['inputs'][span] = seq.tokens
        row['targets'][at:at + n - 1] = seq.tokens[1:]
        row['segment_ids'][span] = segment
        row['positions'][span] = np.arange(n)
        # Position t predicts token t + 1: the reply's tokens are predicted from start - 1 on.
        row[f'{side}_mask'][at + seq.start - 1:at + seq.end - 1] = 1.0
        row[f'{side}_last'][at + n - 1] = 1.0
        at += n
    return row


@dataclasses.dataclass(frozen=True)
class PairEncoder:
    """Turns Preference records (prompt messages, chosen, rejected) into rows of `seq_len`."""

    template: ChatTemplate
    tokenizer: Any
    seq_len: int

    def rows(self, records: Sequence[Any]) -> tuple[list[dict[str, np.ndarray]], dict]:
        """(rows, stats): one row per usable pair, in record order; skips counted."""
        rows, stats = [], {'pairs': len(records), 'identical_pairs': 0, 'too_long_pairs': 0}
        for i, record in enumerate(records):
            where = getattr(record, 'origin', '') or f'record {i}'
            if not isinstance(record, Preference):
                raise DataError(f'{where} is a {type(record).__name__}, not a preference pair '
                                '(prompt, chosen, rejected): `data.mixture` must name '
                                'preference datasets (e.g. hh_rlhf) for this objective')
            chosen, rejected = (tokenize_reply(record.prompt, reply, self.template,
                                               self.tokenizer, where)
                                for reply in (record.chosen, record.rejected))
            if np.array_equal(chosen.reply, rejected.reply):
                stats['identical_pairs'] += 1
            elif len(chosen.tokens) + len(rejected.tokens) > self.seq_len:
                stats['too_long_pairs'] += 1
            else:
                rows.append(pair_row(chosen, rejected, self.seq_len))
        stats['pair_rows'] = len(rows)
        return rows, stats


def stack_rows(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows -> a batch [len(rows), seq_len] per field."""
    return {k: np.stack([r[k] for r in rows]) for k in FIELDS}


def target_fields(data_cfg: Any) -> dict[str, Field]:
    """The fields the preference objectives read beyond the decoder's inputs."""
    length = (data_cfg.seq_len,)
    return {'targets': Field(length),
            **{k: Field(length, np.float32) for k in _FLOAT_FIELDS}}


def check_data(data_cfg: Any, objective: str) -> None:
    """ConfigError when the data config cannot make preference rows."""
    if data_cfg.source != 'mixture':
        raise ConfigError(f"`data.objective` = {objective!r} reads preference records: set "
                          "`data.source` = 'mixture' and `data.mixture` to preference datasets "
                          "(e.g. 'hh_rlhf:1')")
    if data_cfg.truncation != 'drop':
        raise ConfigError(f"`data.truncation` = {data_cfg.truncation!r}: preference pairs that "
                          "do not fit `data.seq_len` are dropped (counted), never cut; set "
                          "it to 'drop'")


def data_transform(data_cfg: Any, tokenizer: Any) -> DataTransform:
    """Preference records -> pair rows (already packed: one pair per row)."""
    encoder = PairEncoder(run_template(data_cfg), tokenizer, data_cfg.seq_len)
    return DataTransform(examples=encoder.rows, lengths=dict.fromkeys(FIELDS, data_cfg.seq_len),
                         to_batch=dict, packed=True)

