"""Hook for a toxicity classifier: drop documents it scores at or above a threshold.

The classifier is named by an import path `module:function`; the function takes a list of texts
and returns one probability of toxicity per text. The trained classifier of a later issue plugs
in here without changes to the pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence

from data_pipelines.document import Document

Classifier = Callable[[Sequence[str]], Sequence[float]]


@functools.cache
def load_classifier(spec: str) -> Classifier:
    module, sep, name = spec.partition(':')
    if not sep or not module or not name:
        raise ValueError(f"toxicity.classifier {spec!r} must be 'module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f'toxicity.classifier {spec!r}: {name} is not a function of {module}')
    return fn


@dataclasses.dataclass(frozen=True)
class ToxicityFilter:
    classifier: str
    threshold: float = 0.5

    def __call__(self, doc: Document) -> Document | str:
        score = float(load_classifier(self.classifier)([doc.text])[0])
        if score >= self.threshold:
            return 'toxic'
        return Document(doc.id, doc.text, {**doc.metadata, 'toxicity': score})
