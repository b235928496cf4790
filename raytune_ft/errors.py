"""The one exception type of raytune-ft, and its two kinds.

Every error a user can act on is a RaytuneFtError whose message is one line: the CLI prints
it as `error: <message>` and exits with its `exit_code`; the Python API (api.py) raises it.
"""

from __future__ import annotations


class RaytuneFtError(Exception):
    """A one-line error for the user; `exit_code` is the CLI's exit status for it."""

    exit_code = 1


class ConfigError(RaytuneFtError, ValueError):
    """Bad user input (config, data, paths), found before anything is written: exit 2."""

    exit_code = 2


class RunFailed(RaytuneFtError):
    """The run started but could not finish (no trial reported a result, a crash): exit 1."""

    exit_code = 1
