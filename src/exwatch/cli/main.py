"""The ``exwatch`` root command: global options, lazy sub-commands and the error boundary."""

from __future__ import annotations

import importlib
import io
import sys
from typing import Any

import click

from exwatch._version import __version__
from exwatch.errors import ExwatchError

# Sub-commands are imported only when used, so that ``exwatch kb`` never pays for the scanner's or
# the hunter's imports, and a broken optional extra only breaks the command that needs it.
COMMANDS: dict[str, tuple[str, str]] = {
    "kb": ("exwatch.cli.kb", "kb"),
    "scan": ("exwatch.cli.scan", "scan"),
    "hunt": ("exwatch.cli.hunt", "hunt"),
    "mitigate": ("exwatch.cli.mitigate", "mitigate"),
    "report": ("exwatch.cli.report", "report"),
    "hosts": ("exwatch.cli.hosts", "hosts"),
    "scans": ("exwatch.cli.scans", "scans"),
    "lab": ("exwatch.cli.lab", "lab"),
    "demo": ("exwatch.cli.demo", "demo"),
    "serve": ("exwatch.cli.serve", "serve"),
    "cluster": ("exwatch.cli.cluster", "cluster"),
    "collect": ("exwatch.cli.collect", "collect"),
    "watch": ("exwatch.cli.watch", "watch"),
    "import": ("exwatch.cli.imports", "import_"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, from ``commands_map``."""

    commands_map: dict[str, tuple[str, str]] = COMMANDS

    @classmethod
    def group_command(cls, **kwargs: Any) -> Any:
        """Decorator: a click group of this class."""
        return click.group(cls=cls, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.commands_map))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands_map:
            module_name, attr = self.commands_map[cmd_name]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    return None
                raise
            command = getattr(module, attr)
            assert isinstance(command, click.Command)
            with_global_options(command)
            return command
        return super().get_command(ctx, cmd_name)


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["verbosity"] = -1


def _add_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        obj = ctx.find_root().ensure_object(dict)
        if obj.get("verbosity", 0) >= 0:
            obj["verbosity"] = obj.get("verbosity", 0) + value


def with_global_options(command: click.Command) -> click.Command:
    """Give ``command`` and its sub-commands the root's ``-q`` and ``-v`` (where they do not use the
    letters themselves), so ``exwatch scan RANGE -q`` works as ``exwatch -q scan RANGE`` does."""
    if getattr(command, "_exwatch_global_options", False):
        return command
    used = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    if not used & {"-q", "--quiet"}:
        command.params.append(
            click.Option(
                ["-q", "--quiet"],
                is_flag=True,
                expose_value=False,
                callback=_set_quiet,
                help="Only errors on stderr (as exwatch -q).",
            )
        )
    if not used & {"-v", "--verbose"}:
        command.params.append(
            click.Option(
                ["-v", "--verbose"],
                count=True,
                expose_value=False,
                callback=_add_verbose,
                help="More detail on stderr (as exwatch -v).",
            )
        )
    command._exwatch_global_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_global_options(sub)
    return command


def _as_store_error(exc: Exception) -> ExwatchError | None:
    """A database error from SQLAlchemy (a damaged or locked store) as a one-line StoreError.

    Checked without importing SQLAlchemy: a command that never loaded it cannot have raised it."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(exc, sa_exc.DBAPIError):
        return None
    from exwatch.fleet import damaged

    return damaged(None, exc)


class RootGroup(LazyGroup):
    """The root group: the error boundary around every command.

    click's standalone mode turns an exception into a traceback; here an ``ExwatchError`` (or a
    damaged store's database error) becomes one line ``exwatch: error: ...`` on stderr and the
    error's exit code instead."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ExwatchError as exc:
            click.echo(f"exwatch: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # The commands that find things (scan, hunt, watch) say what they kept and found; any other
            # stopped by Ctrl-C found nothing and did not finish: one line and 3, not click's
            # "Aborted!" and 1, which the exit-code contract reads as "something found".
            click.echo("exwatch: interrupted; what was written before it is kept", err=True)
            ctx.exit(3)  # EXIT_INCOMPLETE of cli.common, not imported here: every command start pays for it
        except Exception as exc:
            error = _as_store_error(exc)
            if error is None:
                raise
            click.echo(f"exwatch: error: {error}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exwatch")
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="Store URL (default: EXWATCH_DB or SQLite in the data directory).",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr (repeat for more).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: int, quiet: bool) -> None:
    """exwatch: find exposed Exchange servers, hunt for compromise, mitigate and track progress.

    Exit codes: 0 nothing found; 1 something found (a vulnerable host, a finding); 2 bad input;
    3 nothing found but some targets or files could not be checked.
    """
    ctx.ensure_object(dict)
    ctx.obj["db_url"] = db_url
    ctx.obj["verbosity"] = -1 if quiet else verbose


def whole_writes() -> None:
    """Give stdout a buffer when it has none (``python -u``, PYTHONUNBUFFERED=1).

    Unbuffered, text goes straight to the file, and a write that a signal cuts short while a pipe's
    reader is behind keeps only what the pipe took: 131,072 of 2,000,001 bytes of one JSON document,
    measured (tests/cli/test_main.py::test_stdout_writes_whole_under_signals). A buffered writer
    writes the rest; each record is still flushed, so a reader sees every line as soon as it is done."""
    stream = sys.stdout
    raw = getattr(stream, "buffer", None)
    if not isinstance(stream, io.TextIOWrapper) or not isinstance(raw, io.RawIOBase):
        return
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
    )


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; known errors become one line on stderr and their exit code, never a traceback."""
    whole_writes()
    try:
        return cli.main(args=argv, prog_name="exwatch", standalone_mode=True)
    except ExwatchError as exc:  # raised outside click's own handling (e.g. in result callbacks)
        click.echo(f"exwatch: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        error = _as_store_error(exc)
        if error is None:
            raise
        click.echo(f"exwatch: error: {error}", err=True)
        sys.exit(error.exit_code)
