"""FastChat's chat data (`fastchat_chat_and_mtbench`, Apache-2.0; the reference answers are GPT-4
outputs, so OpenAI's terms may apply): the 500 ShareGPT-shaped conversations of
`dummy_conversation.json` (FastChat's SFT example data), and the MT-Bench and Vicuna-bench
questions that have GPT-4 reference answers (30 two-turn and 10 one-turn), each as a
conversation. Training on the benchmark questions contaminates them as benchmarks: jaxlm does not
score MT-Bench."""

from __future__ import annotations

from jaxlm.data.chat import conversation
from jaxlm.data.records import Conversation
from jaxlm.data.sets import read_json, read_jsonl, verified

LICENSE = 'Apache-2.0 (reference answers: GPT-4 outputs, OpenAI terms may apply)'
DIR = 'fastchat_chat_and_mtbench'
CONVERSATIONS = (f'{DIR}/dummy_conversation.json',
                 '534c5a1079f2eb61ff96633330ce87c4743f5b6d5b1691b44a65920473540470')
BENCHES = {
    # (question.jsonl, reference_answer/gpt-4.jsonl) sha256
    'mt_bench': ('119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7',
                 'f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f'),
    'vicuna_bench': ('c248c5c98ba45bb0c2aadae2f270e643bd32679c6c306a3b2a503ac4254cdaa5',
                     'f7542dc25a5a869b32197486f5699a14eb5682ab3c7264518402399ec09ab470'),
}


def _bench(data_dir: str, name: str, first: int) -> list[Conversation]:
    questions_sha, answers_sha = BENCHES[name]
    questions = {q['question_id']: q['turns'] for q in
                 read_jsonl(verified(data_dir, f'{DIR}/{name}/question.jsonl', questions_sha))}
    answers = read_jsonl(verified(data_dir, f'{DIR}/{name}/reference_answer/gpt-4.jsonl',
                                  answers_sha))
    out = []
    for i, a in enumerate(answers):
        where = f'fastchat:{first + i} ({name} question {a["question_id"]})'
        turns = zip(questions[a['question_id']], a['choices'][0]['turns'], strict=True)
        messages = [m for user, reply in turns for m in (
            {'role': 'user', 'content': user}, {'role': 'assistant', 'content': reply})]
        out.append(Conversation(tuple(conversation(messages, where)), origin=where))
    return out


def load(data_dir: str) -> list[Conversation]:
    out = []
    for i, rec in enumerate(read_json(verified(data_dir, *CONVERSATIONS))):
        where = f'fastchat:{i} ({rec.get("id")})'
        out.append(Conversation(tuple(conversation(rec['conversations'], where)), origin=where))
    for name in BENCHES:
        out += _bench(data_dir, name, len(out))
    return out
