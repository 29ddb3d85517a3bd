"""User-facing errors: one clear message naming the file, key or YAML path and what is valid."""

from __future__ import annotations

from collections.abc import Iterable


class KdframeError(Exception):
    """An error the CLI prints as one message, without a traceback."""


class ConfigError(KdframeError):
    def __init__(self, where: str, problem: str, valid: Iterable[str] | str | None = None):
        message = f"{where}: {problem}"
        if valid is not None:
            choices = valid if isinstance(valid, str) else ", ".join(sorted(map(str, valid))) or "(none)"
            message += f" (valid: {choices})"
        super().__init__(message)
        self.where = where


class DataError(KdframeError):
    """A data file that is missing, malformed or lacks a requested key."""


class ArchitectureError(KdframeError):
    """An architecture plugin broke its contract at run time (e.g. an output of the wrong type or shape): a bug in
    the plugin, not in the data or the configuration. ``python -m kdframe.testing NAME`` runs the conformance kit."""


class RunStateError(KdframeError):
    """A file in a run directory that is damaged, does not belong to this run, or a run directory in use."""


class WriteError(KdframeError):
    """A file or folder that cannot be written (permissions, read-only file system, full disk)."""
