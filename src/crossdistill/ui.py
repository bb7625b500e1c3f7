"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations


def console():
    """A rich Console; tables are not truncated when stdout is a file or a pipe."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=200)
