"""Hub commands: `push` and `card`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import CrossdistillError


def push(folder: Path = typer.Argument(..., help="an exported Student (RUN/student) or a Bridge (RUN/bridge)"),
         repo_id: str = typer.Argument(..., help="owner/name on the Hugging Face Hub (created if missing)"),
         private: bool = typer.Option(False, help="create the repo private"),
         message: Optional[str] = typer.Option(None, help="commit message"),
         revision: Optional[str] = typer.Option(None, help="branch to upload to (default: main)")) -> None:
    """Upload an exported Student or a Bridge, model card included, with huggingface_hub
    (log in first: `huggingface-cli login` or HF_TOKEN)."""
    from ..hub import push as run

    print(f"uploaded {folder} to {run(folder, repo_id, private, message, revision)}")


def card(folder: Path = typer.Argument(..., help="an exported Student or a Bridge folder"),
         metrics: Optional[Path] = typer.Option(None, help="a metrics.json `crossdistill eval` wrote, "
                                                "recorded in the card")) -> None:
    """Re-render the model card (README.md) of a Student or Bridge, adding measured metrics."""
    import json

    from ..hub import add_metrics, flat_metrics, write_card

    if metrics is not None:
        if not metrics.is_file():
            raise CrossdistillError(f"metrics file not found: {metrics}")
        add_metrics(folder, flat_metrics(json.loads(metrics.read_text())))
    print(f"wrote {write_card(folder)}")


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("card")(card)
