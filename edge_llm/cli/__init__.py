"""The `edge-llm` command. One module per command; heavy imports happen inside the commands."""

from __future__ import annotations

import sys

import typer

from edge_llm.cli import chat, clean, devices, info, models, plan, pull, run, serve
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
app.command("pull")(pull.pull)
app.command("rm")(pull.rm)
app.command("serve")(serve.serve)
app.command("devices")(devices.devices)
app.command("plan")(plan.plan)
app.command("clean")(clean.clean)

from edge_llm.cli.plugins import load_plugins  # noqa: E402 - after the runtime's commands

_PLUGINS: list[str] | None = None


def cli_app() -> typer.Typer:
    """The app with every installed plugin's commands (loaded once, when the CLI runs: importing
    this package imports no plugin)."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = load_plugins(app)
    return app


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


def _click_exceptions() -> tuple[type[Exception], tuple[type[BaseException], ...]]:
    """Typer's usage-error base class and its Abort classes. Typer 0.12-0.16 raise click's own;
    later typers vendor click (typer._click), whose exceptions are not click's: ask typer's own
    BadParameter which ClickException it derives from."""
    error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    vendored = sys.modules[error.__module__]
    return error, tuple({typer.Abort, getattr(vendored, "Abort", typer.Abort)})


def main() -> None:
    """Run the CLI: one-line errors with exit 2, Ctrl-C exits 130 and SIGTERM 143 after their
    cleanups (click's own handling would print "Aborted!" and exit 1)."""
    from edge_llm import interrupts

    click_error, click_abort = _click_exceptions()

    interrupts.install()
    code: int = 0
    try:
        rv = cli_app()(standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except EdgeLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except (KeyboardInterrupt, *click_abort) as e:
        print(file=sys.stderr)
        code = 1 if isinstance(e.__cause__, EOFError) else 130
    except click_error as e:
        e.show()
        code = e.exit_code
    except BrokenPipeError:  # `edge-llm run ... | head`
        sys.stderr.close()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    if interrupts.native_work_running():
        interrupts.hard_exit(code)
    raise SystemExit(code)
