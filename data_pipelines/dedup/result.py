"""What a dedup job hands back for each input shard."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DedupResult:
    """`removed` maps the id of every dropped document to the id of its cluster's kept document."""

    removed: dict[str, str] = dataclasses.field(default_factory=dict)
