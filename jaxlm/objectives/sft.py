"""Supervised fine-tuning (chat / instruction tuning): next-token cross-entropy on the assistant
turns only (completion-only loss), over conversations packed without cross-talk.

Its data side: each `Conversation` record of the 'mixture' source (jaxlm/data/mixture.py) is
rendered with the run's chat template and tokenized with the mask of its assistant tokens
(jaxlm/data/chat_format.py: BOS first, the mask by longest common prefix, so any template works,
one that writes text after the answer too); then all examples of a split are packed once by
best-fit decreasing into rows of seq_len (jaxlm/data/packing.py) with segment ids and positions
restarted at 0, so no example attends to another and every token's loss equals its loss
unpacked. The pipeline shuffles the rows every epoch and batches them.

Bad input is an error, never a silent skip: a record that is not a conversation, a missing or
unknown role, user and assistant turns not alternating, no assistant turn, or an assistant turn
that renders to no token raises ChatFormatError naming the dataset and index (`origin`).
An example longer than seq_len + 1 tokens (seq_len next-token pairs) follows `data.truncation`:
'drop' leaves it out (`too_long_dropped`), 'truncate' keeps its first seq_len + 1 tokens
(`truncated`; one left with no assistant token is then dropped: `truncated_to_nothing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm.data import chat_format, packing
from jaxlm.data.chat import ChatFormatError, ChatTemplate
from jaxlm.data.records import Conversation
from jaxlm.errors import ConfigError
from jaxlm.objectives.base import DataTransform
from jaxlm.objectives.lm import LanguageModeling


class PackedRows:
    """Random access to packed rows (dicts of [seq_len] arrays) over [rows, seq_len] arrays,
    which pickle cheaply to grain workers."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays['inputs'])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class ConversationPacker:
    """Conversation records -> packed rows of `seq_len`, with the counts of what happened."""

    template: ChatTemplate
    tokenizer: Any
    seq_len: int
    truncation: str = 'drop'

    def example(self, record: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, assistant mask) of one record, checked."""
        where = getattr(record, 'origin', '') or f'record {index}'
        if not isinstance(record, Conversation):
            raise ChatFormatError(f'{where}: sft trains on conversations, got a '
                                  f'{type(record).__name__}')
        tokens, mask = chat_format.conversation_ids(record.messages, self.template,
                                                    self.tokenizer, where)
        if not mask.any():
            raise ChatFormatError(f'{where}: no assistant turn to train on')
        return tokens, mask

    def rows(self, records: Sequence[Any]) -> tuple[PackedRows, dict]:
        stats = dict.fromkeys(('conversations', 'too_long_dropped', 'truncated',
                               'truncated_to_nothing', 'examples', 'tokens', 'trained_tokens'), 0)
        examples = []
        for i, record in enumerate(records):
            stats['conversations'] += 1
            tokens, mask = self.example(record, i)
            if len(tokens) > self.seq_len + 1:
                if self.truncation == 'drop':
                    stats['too_long_dropped'] += 1
                    continue
                stats['truncated'] += 1
                tokens, mask = tokens[:self.seq_len + 1], mask[:self.seq_len + 1]
                if not mask[1:].any():
                    stats['truncated_to_nothing'] += 1
                    continue
            examples.append((tokens, mask))
            stats['tokens'] += len(tokens) - 1
            stats['trained_tokens'] += int(mask[1:].sum())
        stats['examples'] = len(examples)
        rows = packing.pack(examples, self.seq_len, self.tokenizer.pad_id)
        stats['rows'] = len(rows['inputs'])
        stats['fill'] = round(stats['tokens'] / max(stats['rows'] * self.seq_len, 1), 4)
        return PackedRows(rows), stats


def check_data(data_cfg: Any, objective: str) -> None:
    if data_cfg.source != 'mixture':
        raise ConfigError(f"`data.objective` = {objective!r} reads conversation records: set "
                          "`data.source` = 'mixture' and `data.mixture` (e.g. 'gsm8k:1')")
    chat_format.run_template(data_cfg)  # a missing template file fails now


@dataclasses.dataclass(frozen=True)
class SupervisedFineTuning(LanguageModeling):
    """Language modelling's loss (and z-loss) on packed conversation rows."""

    name: str = 'sft'

    def validate(self, data_cfg: Any) -> None:
        check_data(data_cfg, self.name)

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        packer = ConversationPacker(chat_format.run_template(data_cfg), tokenizer,
                                    data_cfg.seq_len, data_cfg.truncation)
        return DataTransform(examples=packer.rows,
                             lengths=dict.fromkeys(('inputs', 'targets'), data_cfg.seq_len),
                             to_batch=dict, packed=True,
                             stats={'end_of_turn_id': chat_format.end_of_turn_id(tokenizer)})
