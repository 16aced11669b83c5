"""Self-Instruct's human-written instructions (`self_instruct`, Apache-2.0): the 175 seed tasks
(also Stanford Alpaca's) and the 252 user-oriented instructions, one single-turn conversation per
instance: the instruction, then its input after a blank line when it has one, as the user turn;
the instance's output as the assistant turn."""

from __future__ import annotations

from jaxlm.data.chat import conversation
from jaxlm.data.records import Conversation
from jaxlm.data.sets import read_jsonl, verified

LICENSE = 'Apache-2.0'
FILES = (('self_instruct/seed_tasks.jsonl',
          '7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48'),
         ('self_instruct/user_oriented_instructions.jsonl',
          '81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e'))


def load(data_dir: str) -> list[Conversation]:
    out = []
    for path, sha256 in FILES:
        for task in read_jsonl(verified(data_dir, path, sha256)):
            for instance in task['instances']:
                where = f'self_instruct:{len(out)} ({task["id"]})'
                user = task['instruction'] + (f'\n\n{instance["input"]}' if instance['input']
                                              else '')
                messages = [{'role': 'user', 'content': user},
                            {'role': 'assistant', 'content': instance['output']}]
                out.append(Conversation(tuple(conversation(messages, where)), origin=where))
    return out
