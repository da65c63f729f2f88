"""Errors the library raises for bad input, with messages that say what to do."""


class DarecError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(DarecError, ValueError):
    """A dataset file is missing, malformed, refused or inconsistent."""


class ConfigError(DarecError, ValueError):
    """An unknown name, key or value in the configuration or on the command line."""
