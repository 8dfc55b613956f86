"""Command-line interface: ``autocompress compress | inspect | profile | policy | apply | demo | search | ...``.

One module per command group (``model``, ``study``, ``refine``), all on the one Typer ``app`` of
``common``; importing them registers their commands.
"""

from __future__ import annotations

from autocompress.cli import model, refine, study  # noqa: F401 - each registers its commands on `app`
from autocompress.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
