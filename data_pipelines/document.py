"""The unit every curation stage reads and writes."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Document:
    """One document with its provenance.

    `id` is unique within a pipeline run (`<source>/<file>:<index>` from the readers), so a removal
    can always be traced back to its input. `metadata` carries at least `source` and `licence`, and
    stages add their annotations (for example `language`, `language_score`, `pii_redactions`).
    """

    id: str
    text: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {'id': self.id, 'text': self.text, 'metadata': self.metadata}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Document:
        return cls(id=record['id'], text=record['text'], metadata=dict(record.get('metadata', {})))
