"""Chat conversations: validation, rendering as transformers renders chat templates, and the
completion-only (assistant) mask on multi-turn conversations and templates with a footer."""

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxlm.data.chat import ChatFormatError, ChatTemplate, Message, conversation, tokenize_with_mask

SPECIAL = ['<s>', '</s>', '<|im_start|>', '<|im_end|>']
CHAT = [{'role': 'system', 'content': 'You are terse.'},
        {'role': 'user', 'content': 'What is 2 + 3?'},
        {'role': 'assistant', 'content': '2 + 3 = 5.'},
        {'role': 'user', 'content': 'And times 4?'},
        {'role': 'assistant', 'content': 'That is 20.'}]
# Llama 2's template (system folded into the first user turn, eos after every answer).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}")
# A template that closes every conversation with text of its own.
FOOTER = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}{{ '### END' }}")


@pytest.fixture(scope='module')
def tokenizer():
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m['content'] for m in CHAT] * 20 + ['user assistant system INST SYS END'] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _encode(tok):
    return lambda text: tok.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize('name,source', [('chatml', ChatTemplate().source), ('llama2', LLAMA2)])
@pytest.mark.parametrize('generation_prompt', [False, True])
def test_token_ids_equal_transformers_apply_chat_template(tokenizer, name, source,
                                                          generation_prompt):
    transformers = pytest.importorskip('transformers')
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token='<s>',
                                              eos_token='</s>', chat_template=source)
    messages = CHAT[:-1] if generation_prompt else CHAT
    expected = hf.apply_chat_template(messages, tokenize=True, return_dict=False,
                                      add_generation_prompt=generation_prompt)
    template = ChatTemplate(source, {'bos_token': '<s>', 'eos_token': '</s>'})
    ours = _encode(tokenizer)(template.render(conversation(messages), generation_prompt))
    assert ours == list(expected), name


@pytest.mark.parametrize('source,trained', [
    (ChatTemplate().source, ['2 + 3 = 5.<|im_end|>\n', 'That is 20.<|im_end|>\n']),
    (LLAMA2, [' 2 + 3 = 5. </s>', ' That is 20. </s>']),
    (FOOTER, ['2 + 3 = 5.\n', 'That is 20.\n']),  # never the footer
])
def test_only_assistant_turns_are_trained(tokenizer, source, trained):
    template = ChatTemplate(source, {'bos_token': '<s>', 'eos_token': '</s>'})
    ids, mask = tokenize_with_mask(conversation(CHAT), template, _encode(tokenizer))
    assert ids.shape == mask.shape and mask.any() and not mask.all()
    # The masked tokens form one span per assistant turn, with exactly its text.
    starts = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int)])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([mask.astype(int), [0]])) == -1) + 1
    spans = [tokenizer.decode(ids[s:e].tolist(), skip_special_tokens=False)
             for s, e in zip(starts, ends, strict=True)]
    # Where the template puts a space before the answer, BPE may make it part of the answer's
    # first token (' 2') or not ('That'): compare without the leading space.
    assert [span.lstrip(' ') for span in spans] == [t.lstrip(' ') for t in trained]


def test_fastchat_shape_and_errors():
    fastchat = [{'from': 'human', 'value': 'hi'}, {'from': 'gpt', 'value': 'hello'}]
    assert conversation(fastchat) == [Message('user', 'hi'), Message('assistant', 'hello')]
    for bad, message in (
            ([], 'no messages'),
            ([{'content': 'hi'}], 'no role'),
            ([{'role': 'robot', 'content': 'hi'}], 'unknown role'),
            ([{'role': 'user', 'content': None}], 'must be a string'),
            ([{'role': 'assistant', 'content': 'hi'}], "expected a 'user' turn"),
            ([{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'}],
             "message 1: expected a 'assistant' turn")):
        with pytest.raises(ChatFormatError, match=message):
            conversation(bad, 'conversation 7')
