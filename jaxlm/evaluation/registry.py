"""Task names -> Task classes. A task registers itself with `@register('name')` in one file of
`jaxlm/evaluation/tasks/`, which `tasks/__init__.py` imports."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from jaxlm.errors import UserError
from jaxlm.evaluation.task import Task

T = TypeVar('T', bound=type[Task])
_TASKS: dict[str, type[Task]] = {}


class UnknownTaskError(UserError, LookupError):
    """A task name that no module registers, or an option its constructor does not take."""


def register(name: str) -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f'task {name!r} is already registered by {_TASKS[name].__name__}')
        cls.name = name
        _TASKS[name] = cls
        return cls
    return wrap


def _load_builtin() -> None:
    import jaxlm.evaluation.tasks  # noqa: F401 (registers on import; avoids a cycle)


def get_task(name: str, **options: Any) -> Task:
    """A new instance of the task; `options` go to its constructor (e.g. `split=`)."""
    _load_builtin()
    if name not in _TASKS:
        raise UnknownTaskError(f'unknown task {name!r}; known tasks: {", ".join(list_tasks())}')
    accepted = inspect.signature(_TASKS[name]).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownTaskError(f'task {name!r} has no option {", ".join(unknown)}; its options: '
                               f'{", ".join(accepted) or "none"}')
    return _TASKS[name](**options)


def list_tasks() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)
