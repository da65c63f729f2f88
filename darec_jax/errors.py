"""Errors the library raises for bad input, with messages that say what to do."""


class DarecError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(DarecError, ValueError):
    """A dataset file is missing, malformed, refused or inconsistent."""


class ConfigError(DarecError, ValueError):
    """An unknown name, key or value in the configuration or on the command line."""


class RunInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving the state at the end of an epoch.

    Attributes: ``signal_name`` ("SIGINT" / "SIGTERM"), ``exit_code`` (130 / 143, the shell's
    128 + signal number), ``next_epoch`` (the epoch a ``--resume`` starts with, or None when the
    signal came before the first epoch finished and nothing was saved), ``workdir``.
    """

    def __init__(self, signal_name: str, exit_code: int, next_epoch: int | None, workdir: str):
        self.signal_name, self.exit_code = signal_name, exit_code
        self.next_epoch, self.workdir = next_epoch, workdir
        saved = (
            "nothing was saved yet"
            if next_epoch is None
            else f"the state at the end of epoch {next_epoch - 1} is saved in {workdir}"
        )
        super().__init__(f"stopped by {signal_name}; {saved}")
