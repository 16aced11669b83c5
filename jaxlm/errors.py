"""The one base class of errors a user can fix.

Every command line (`jaxlm/cli.py`) prints these as one or two lines and exits non-zero; their
messages name the file, field or value and say what to do. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, config or state on disk; the message says which and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the field."""
