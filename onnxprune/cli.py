"""The `onnxprune` command line: a thin click shell over the library functions."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from . import __version__
from .errors import OnnxPruneError
from .shapes import parse_input_shapes

input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME:DxDx..",
    help="Concrete shape for a dynamic input, e.g. input:1x3x224x224 (repeatable). Batch defaults to 1.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
def cli() -> None:
    """Structured pruning, reconstruction and INT8 QDQ for exported ONNX models."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON instead of tables.")
def analyze(model: str, input_shapes: tuple[str, ...], as_json: bool) -> None:
    """Layers, MACs and parameters of MODEL (after normalization)."""
    from .analyze import analyze_model, render_analysis

    result = analyze_model(model, parse_input_shapes(input_shapes))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        render_analysis(Console(), result)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures print one line and exit with the contract's code."""
    try:
        cli.main(args=argv, prog_name="onnxprune", standalone_mode=False)
    except OnnxPruneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:  # usage errors: exit 2 as click does
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                   "(set ONNXPRUNE_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
    sys.exit(0)
