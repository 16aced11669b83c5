"""The unit every curation stage reads and writes."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Document:
    """One document with its provenance.

    `id` is unique within a pipeline run (`<source>/<file>:<index>` from the readers, or
    `<source>/<file>/<record id>` with `#` and `%` of the record id percent-escaped), so a removal
    can always be traced back to its input; a mixture copy is `<id>#<k>`, which no read id ends
    in. `metadata` carries at least `source` and `licence`, and stages add their annotations (for
    example `language`, `language_score`, `pii_redactions`).
    """

    id: str
    text: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {'id': self.id, 'text': self.text, 'metadata': self.metadata}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Document:
        return cls(id=record['id'], text=record['text'], metadata=dict(record.get('metadata', {})))


def escape_record_id(record_id: str) -> str:
    """A record's own id, with `#` (reserved for mixture copies) and `%` percent-escaped."""
    return record_id.replace('%', '%25').replace('#', '%23')


def copy_id(doc_id: str, k: int) -> str:
    """The id of the k-th mixture copy of a document; no read id ends in `#<k>`."""
    return f'{doc_id}#{k}'
