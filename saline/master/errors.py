"""Errors the master's parts raise to its edges (the local API, the runners)."""

from __future__ import annotations


class PublishError(Exception):
    """A publish request that cannot be carried out; one line for the CLI."""
