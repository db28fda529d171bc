"""Exception types raised by advbench.

Every error a user can trigger has its own type and a message that says what was wrong and how
to fix it.  All of them derive from :class:`AdvbenchError`, so a caller can
catch the whole family; each also derives from the matching built-in (``ValueError``,
``KeyError``, ``FileNotFoundError``) so generic handlers keep working.
"""

from __future__ import annotations


class AdvbenchError(Exception):
    """Base class of every error advbench raises on purpose."""


class ConfigError(AdvbenchError, ValueError):
    """A hyperparameter, option or config value is invalid."""


class UnknownNameError(AdvbenchError, KeyError):
    """A registry lookup failed; the message lists the names that are known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(AdvbenchError, ValueError):
    """Something was registered twice under the same name."""


class InputError(AdvbenchError, ValueError):
    """An input tensor breaks the [0,1] NCHW float contract or does not fit the model."""


class BudgetError(AdvbenchError, RuntimeError):
    """An attack returned a point outside its threat model: a bug in the attack, never silenced."""


class DatasetError(AdvbenchError, ValueError):
    """A data set spec or the files behind it are invalid."""


class CheckpointError(AdvbenchError, ValueError):
    """A checkpoint is missing, corrupt, unsafe to load or does not match its architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need to execute pickled code to load, so it is refused."""


class StoreError(AdvbenchError, RuntimeError):
    """The results store could not be read or written."""


class MissingPathError(AdvbenchError, FileNotFoundError):
    """A path given by the user does not exist."""
