"""The `edge-llm` command. One module per command; heavy imports happen inside the commands."""

from __future__ import annotations

import sys

import typer

from edge_llm.cli import (
    bench,
    chat,
    convert,
    devices,
    distill,
    info,
    models,
    plan,
    quant,
    run,
    serve,
)
from edge_llm.errors import EdgeLLMError

app = typer.Typer(
    name="edge-llm",
    help="Run, convert and measure language models on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("run")(run.run)
app.command("chat")(chat.chat)
app.command("info")(info.info)
app.command("models")(models.models)
app.command("serve")(serve.serve)
app.command("devices")(devices.devices)
app.command("plan")(plan.plan)
app.command("convert")(convert.convert)
app.command("export-hf")(convert.export_hf)
app.command("imatrix")(quant.imatrix)
app.command("compare")(quant.compare)
app.command("distill")(distill.distill)
app.add_typer(bench.app, name="bench")


def _version(value: bool) -> None:
    if value:
        from edge_llm import __version__

        typer.echo(f"edge-llm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run, convert and measure language models on edge devices."""


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    try:
        app()
    except EdgeLLMError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `edge-llm run ... | head`
        sys.stderr.close()
        raise SystemExit(0) from None
