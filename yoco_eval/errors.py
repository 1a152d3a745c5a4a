"""User-facing errors.

Every problem a user can cause (a wrong path, a bad flag, a checkpoint that does not match its config) is raised
as a :class:`YocoEvalError` whose message is ONE line naming the problem and how to fix it. The CLI prints that
line and exits with status 2, with no traceback; library callers catch the class.
"""

from __future__ import annotations


class YocoEvalError(Exception):
    """A problem with the user's input, explained in one line (what is wrong, and how to fix it)."""


class CheckpointError(YocoEvalError):
    """A checkpoint that cannot be loaded: missing file, missing/unexpected key, wrong shape."""


class ConfigError(YocoEvalError, ValueError):
    """An invalid configuration value or an unknown preset name."""


class BackendUnavailable(YocoEvalError):
    """An explicitly requested kernel backend is not installed or not supported on this device."""
