"""Exceptions whose message is one line naming the file or value and what to do."""

from __future__ import annotations


class EdgebindError(Exception):
    """Base class: the message is meant to be shown to a user as one line."""


class InputError(EdgebindError, ValueError):
    """An input file or array is unreadable, malformed or out of range."""


class BundleError(EdgebindError):
    """A bundle or manifest is missing, corrupted or does not match its files."""


class ConfigError(EdgebindError, ValueError):
    """A configuration object has unknown keys or invalid values."""
