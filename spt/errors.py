"""Errors a user can fix: each message says what was wrong, where, and how to fix it.

The command line (stages/cli.py) prints any :class:`UserError` as one line and exits 2;
anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Base of every error caused by the user's input (params, data, model, tracking server)."""


class DataError(UserError):
    """Bad input data: a file, a column, a row, a built-in dataset."""


class ModelError(UserError):
    """A model source or checkpoint that cannot be used: wrong architecture, pickled weights, missing files."""


class DiskFullError(UserError):
    """A write failed because the disk (or the user's quota) is full: the message says where, how much is free
    and what the write needs; what was half-written has been removed (spt/outputs.py)."""


class StudyError(UserError):
    """The study's inputs are incomplete (a study run's outputs are missing)."""


class StageInterrupted(RuntimeError):
    """Training stopped on SIGINT after saving a checkpoint; the next run resumes from it."""
