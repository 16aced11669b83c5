"""Instruction tuning of an encoder-decoder, FLAN style: a conversation's prompt is the encoder's
input and its last answer the decoder's target. The loss is the decoder's next-token
cross-entropy, as for span corruption: only target tokens are scored (the inputs are read by the
encoder, never predicted), padding never.

Its data side: each `Conversation` record of the 'mixture' source (jaxlm/data/mixture.py) becomes
inputs = everything before the last assistant turn as plain text (a lone user message is its own
text, as FLAN's inputs; otherwise one 'role: content' line per message), ending with EOS as T5
reads its inputs, and targets = the last assistant message + EOS, which the decoder reads shifted
right from its start token 0. No chat template: `data.chat_template` must stay ''. Examples are
packed first-fit (grain, as span corruption) into rows of `data.inputs_len` encoder and
`data.seq_len` decoder tokens, with segment ids so that packed examples never see each other.

Bad input is an error, never a silent skip: a record that is not a conversation or whose turns
are malformed raises ChatFormatError naming it (`origin`), and so does one without a final
assistant turn. An example whose inputs exceed `data.inputs_len` or whose targets exceed
`data.seq_len` follows `data.truncation`: 'drop' leaves it out (`too_long_dropped`), 'truncate'
keeps the start of each (`truncated`; the inputs still end with EOS, the cut targets do not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm.data import chat
from jaxlm.data.chat import ChatFormatError, Message
from jaxlm.data.records import Conversation
from jaxlm.errors import ConfigError
from jaxlm.models.encoder_decoder import DECODER_START
from jaxlm.objectives.base import DataTransform
from jaxlm.objectives.lm import DECODER_INPUTS, LanguageModeling
from jaxlm.objectives.span_corruption import ENCODER_INPUTS, packed_to_encoder_decoder_batch


def render_inputs(messages: Sequence[Message]) -> str:
    """The encoder's text of the messages before the answer."""
    if len(messages) == 1 and messages[0].role == 'user':
        return messages[0].content
    return '\n'.join(f'{m.role}: {m.content}' for m in messages)


def split_conversation(record: Any, where: str) -> tuple[str, str]:
    """(inputs text, target text) of a conversation record, checked."""
    if not isinstance(record, Conversation):
        raise ChatFormatError(f'{where}: seq2seq trains on conversations, got a '
                              f'{type(record).__name__}')
    messages = chat.conversation([dataclasses.asdict(m) for m in record.messages], where)
    if messages[-1].role != 'assistant':
        raise ChatFormatError(f'{where}: the last message must be the assistant answer to train '
                              f'on, got a {messages[-1].role!r} turn')
    return render_inputs(messages[:-1]), messages[-1].content


@dataclasses.dataclass(frozen=True)
class Seq2SeqExamples:
    """Conversation records -> {'encoder_inputs', 'inputs', 'targets'} examples, with the counts
    of what happened to them."""

    tokenizer: Any
    inputs_len: int
    targets_len: int
    truncation: str = 'drop'

    def example(self, record: Any, index: int) -> tuple[dict[str, np.ndarray], bool]:
        """(the example, whether it had to be cut) of one record."""
        where = getattr(record, 'origin', '') or f'record {index}'
        source, target = split_conversation(record, where)
        eos = self.tokenizer.eos_id
        inputs = self.tokenizer.encode(source) + [eos]
        targets = self.tokenizer.encode(target) + [eos]
        too_long = len(inputs) > self.inputs_len or len(targets) > self.targets_len
        if len(inputs) > self.inputs_len:
            inputs = inputs[:self.inputs_len - 1] + [eos]
        targets = targets[:self.targets_len]
        return {'encoder_inputs': np.asarray(inputs, np.int32),
                'inputs': np.asarray([DECODER_START] + targets[:-1], np.int32),
                'targets': np.asarray(targets, np.int32)}, too_long

    def examples(self, records: Sequence[Any]) -> tuple[list[dict[str, np.ndarray]], dict]:
        stats = dict.fromkeys(('conversations', 'too_long_dropped', 'truncated', 'examples',
                               'inputs_tokens', 'target_tokens'), 0)
        out = []
        for i, record in enumerate(records):
            stats['conversations'] += 1
            example, too_long = self.example(record, i)
            if too_long and self.truncation == 'drop':
                stats['too_long_dropped'] += 1
                continue
            stats['truncated'] += too_long
            stats['inputs_tokens'] += len(example['encoder_inputs'])
            stats['target_tokens'] += len(example['targets'])
            out.append(example)
        stats['examples'] = len(out)
        return out, stats


@dataclasses.dataclass(frozen=True)
class Seq2Seq(LanguageModeling):
    name: str = 'seq2seq'

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS + ENCODER_INPUTS

    def validate(self, data_cfg: Any) -> None:
        if data_cfg.source != 'mixture':
            raise ConfigError("`data.objective` = 'seq2seq' reads conversation records: set "
                              "`data.source` = 'mixture' and `data.mixture` (e.g. 'gsm8k:1')")
        if data_cfg.chat_template:
            raise ConfigError("`data.objective` = 'seq2seq' renders its inputs as plain text, "
                              "without a chat template: leave `data.chat_template` = ''")

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        maker = Seq2SeqExamples(tokenizer, data_cfg.inputs_len, data_cfg.seq_len,
                                data_cfg.truncation)
        lengths = {'encoder_inputs': data_cfg.inputs_len, 'inputs': data_cfg.seq_len,
                   'targets': data_cfg.seq_len}
        return DataTransform(examples=maker.examples, lengths=lengths,
                             to_batch=packed_to_encoder_decoder_batch)
