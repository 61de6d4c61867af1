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


class NonFiniteOutputError(MinbertError):
    """A model's outputs are NaN or infinite, so no prediction file is written (the message names
    the task, the number of rows and an example id)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training. Not a mistake, so not a :class:`MinbertError`: like
    ``KeyboardInterrupt`` it passes through ``except Exception``. ``str()`` is the one-line message
    (what was saved, how to resume); the CLI prints it and exits with ``exit_code`` (128 + the
    signal number: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


def out_of_memory(e: BaseException) -> str | None:
    """The first line of an allocator's failure, or None for any other error. torch raises
    ``OutOfMemoryError`` (a RuntimeError) on CUDA and a RuntimeError from ``DefaultCPUAllocator``
    on CPU; Python and numpy raise MemoryError (whose text may be empty)."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "DefaultCPUAllocator" in text:
        return first
    return None
