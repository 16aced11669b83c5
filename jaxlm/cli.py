"""What every command line shares: readable errors, `--verbose` for the traceback.

`run(main, module)` replaces `absl.app.run(main)`: flag and config-file errors (an unknown
override, a missing or broken config file) and errors the user can fix (`jaxlm.errors.UserError`,
and the operating system's own: a missing file, a read-only or full disk) become one or two lines
on stderr naming the problem, with exit status 1. Other exceptions raised by `main` are bugs and
keep their traceback. `report` does the same for the argparse-based `jaxlm.convert`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags

from jaxlm.errors import UserError

_VERBOSE = flags.DEFINE_bool('verbose', False, 'On an error, print the full traceback too.')

USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)


def describe(exc: BaseException) -> str:
    """At most two lines: the OS error's reason and path, a syntax error's place, else the
    message's first and last line (config_flags wraps a config file's own error in a traceback)."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.filename:
        return f'{exc.strerror or exc}: {exc.filename}'
    if isinstance(exc, SyntaxError):
        return f'{exc.filename}:{exc.lineno}: {exc.msg}'
    lines = [line.strip() for line in _message(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f'{lines[0]}\n  {lines[-1]}'


def _message(exc: BaseException) -> str:
    """The text of an exception; KeyError's str() would quote it, ml_collections nests it."""
    while isinstance(exc, KeyError | AttributeError) and exc.args:
        if not isinstance(exc.args[0], BaseException):
            return str(exc.args[0])
        exc = exc.args[0]
    return str(exc)


def report(exc: BaseException, prog: str) -> int:
    """Prints `prog: error: ...` (with a hint at --verbose) and returns the exit status."""
    print(f'{prog}: error: {describe(exc)}', file=sys.stderr)
    print(f'{prog}: (run with --verbose for the traceback)', file=sys.stderr)
    return 1


def _parse_flags(argv: list[str], prog: str) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:
        if '--verbose' in argv:
            raise
        if isinstance(e, KeyError | AttributeError):  # ml_collections: an unknown override
            key = describe(e).splitlines()[0].strip('\'"')
            named = [a.split('=')[0] for a in argv if a.startswith('--config.') and
                     key in a.split('=')[0].split('.')]
            e = UserError(f'unknown config field in {" ".join(named) or "an override"}: '
                          f'{describe(e)}')
        sys.exit(report(e, prog))


def run(main: Callable[[list[str]], Any], module: str) -> None:
    """`absl.app.run(main)` for `python -m module`, with the errors above made readable."""
    prog = f'python -m {module}'

    def guarded_main(argv: list[str]) -> Any:
        try:
            return main(argv)
        except USER_ERRORS as e:
            if _VERBOSE.value:
                raise
            sys.exit(report(e, prog))

    app.run(guarded_main, flags_parser=functools.partial(_parse_flags, prog=prog))
