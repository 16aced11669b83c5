"""Per-stage accounting: every document a stage reads is kept or removed with a reason.

`StageStats` counts one stage over one shard; `merge` adds shards up. Removed documents go to
`removed/<stage>/<reason>/<shard>.jsonl.gz`, as datatrove's exclusion writer keeps them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

from data_pipelines.document import Document
from data_pipelines.shard_io import write_jsonl

_EXAMPLE_CHARS = 300
EXAMPLE_NOTES = ('error', 'duplicate_of')  # metadata quoted with an example


@dataclasses.dataclass
class StageStats:
    name: str
    max_examples: int = 3
    read: int = 0
    kept: int = 0
    removed: int = 0
    modified: int = 0  # kept documents whose text the stage changed
    chars_in: int = 0
    chars_out: int = 0
    seconds: float = 0.0  # CPU seconds spent in the stage
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)
    counters: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    _removed_docs: dict[str, list[Document]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list))

    def keep(self, before: Document, after: Document) -> None:
        self.read += 1
        self.kept += 1
        self.chars_in += len(before.text)
        self.chars_out += len(after.text)
        self.modified += after.text != before.text

    def remove(self, doc: Document, reason: str) -> None:
        self.read += 1
        self.removed += 1
        self.chars_in += len(doc.text)
        self.reasons[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            # Undecodable bytes (lone surrogates) are shown escaped, so the datasheet is UTF-8.
            text = doc.text[:_EXAMPLE_CHARS].encode('utf-8', 'backslashreplace').decode('utf-8')
            # Why a reader rejected it (its text may be empty), or which document it repeats.
            notes = {k: str(doc.metadata[k])[:_EXAMPLE_CHARS] for k in EXAMPLE_NOTES
                     if k in doc.metadata}
            examples.append({'id': doc.id, 'text': text, **notes})
        self._removed_docs[reason].append(doc)

    def write_removed(self, out_dir: str, shard: str) -> None:
        for reason, docs in self._removed_docs.items():
            path = os.path.join(out_dir, 'removed', self.name, reason, f'{shard}.jsonl.gz')
            write_jsonl(path, ({**d.to_json(), 'stage': self.name, 'reason': reason} for d in docs))

    def to_json(self) -> dict[str, Any]:
        if self.kept + self.removed != self.read:
            raise AssertionError(f'stage {self.name}: kept {self.kept} + removed {self.removed} '
                                 f'!= read {self.read}')
        out = {k: getattr(self, k) for k in ('name', 'read', 'kept', 'removed', 'modified',
                                             'chars_in', 'chars_out', 'seconds')}
        out.update(reasons=dict(self.reasons), examples=self.examples, counters=dict(self.counters))
        return out


def merge(shard_stats: list[dict[str, Any]], max_examples: int = 3) -> dict[str, Any]:
    """Sums per-shard stage dicts of one stage (examples: the first `max_examples` per reason)."""
    total: dict[str, Any] = {'name': shard_stats[0]['name'], 'reasons': collections.Counter(),
                             'counters': collections.Counter(), 'examples': {}}
    for key in ('read', 'kept', 'removed', 'modified', 'chars_in', 'chars_out', 'seconds'):
        total[key] = sum(s[key] for s in shard_stats)
    for s in shard_stats:
        total['reasons'].update(s['reasons'])
        total['counters'].update(s['counters'])
        for reason, examples in s['examples'].items():
            kept = total['examples'].setdefault(reason, [])
            kept.extend(examples[:max_examples - len(kept)])
    total['reasons'] = dict(sorted(total['reasons'].items(), key=lambda kv: -kv[1]))
    total['counters'] = dict(total['counters'])
    return total
