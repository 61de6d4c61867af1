"""Error types. Every user mistake raises a subclass of :class:`MinbertError`.

The CLI turns a ``MinbertError`` into a one-line message and a non-zero exit code; any other
exception is a bug in minbert and keeps its traceback.
"""


class MinbertError(Exception):
    """Base class of every error caused by user input (files, configs, arguments)."""


class ConfigError(MinbertError):
    """A config key is unknown, has the wrong type, or an option combination is unsupported."""


class DataError(MinbertError):
    """A data file is missing, empty, or malformed (the message names file, line and reason)."""


class CheckpointError(MinbertError):
    """A checkpoint or run folder is missing, incomplete, or does not match the model."""


class NonFiniteLossError(MinbertError):
    """Training produced a non-finite loss or gradient (the message names step, task, batch ids)."""


class DataChangedError(DataError):
    """A run's data files differ from the SHA-256 sums its ``provenance.json`` recorded;
    ``files`` names them."""

    def __init__(self, message: str, files: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.files = list(files)
