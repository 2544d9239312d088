"""The ``idp`` command: init, serve, users, clients, keys. Scriptable; ``--json`` prints data.

One module per command group; :data:`COMMANDS` names them and :class:`LazyGroup` imports
only the one a command line asks for, so that ``idp --help`` and each command start without
importing every other group's services."""

from __future__ import annotations

import gc
import importlib

import click

#: How long a command's first sentence may be in its group's list before click cuts it: longer
#: than any of ours, so that none is cut (the list wraps it instead).
SHORT_HELP_LIMIT = 300

#: Each command of ``idp``: the module of this package that defines it, and its name there.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("deployment", "init"),
    "serve": ("deployment", "serve"),
    "users": ("users", "users"),
    "login-link": ("login_links", "login_link"),
    "clients": ("clients", "clients"),
    "groups": ("groups", "groups"),
    "keys": ("keys", "keys"),
    "api-tokens": ("api_tokens", "api_tokens"),
    "audit": ("audit", "audit"),
    "policy": ("policy", "policy"),
    "outbox": ("outbox", "outbox"),
    "prune": ("prune", "prune"),
}


class Group(click.Group):
    """A command group whose list of commands shows each one's first sentence whole, wrapped,
    where click cuts it at the terminal's width with "...": whoever reads ``idp users --help``
    chooses a command by that sentence, and half of it leaves them guessing."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=SHORT_HELP_LIMIT)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyGroup(Group):
    """A group whose commands are imported from :data:`COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{name} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> object:
        from idp.cli.common import cli_errors

        with cli_errors():
            return super().invoke(ctx)


@click.group(cls=LazyGroup)
def main() -> None:
    """idp: a passkey-first OpenID Connect identity provider."""


def run() -> None:
    """The ``idp`` console script (pyproject.toml): ``main``, with Python's cyclic garbage
    collector paused while the command starts. Importing idp and building its application makes
    a few hundred thousand objects that live as long as the command; the collector, which runs
    every 700 new objects and walks all of them whenever the survivors grew by a quarter, took
    0.3 to 0.5 s of the 1.6 s of CPU a command took to start. ``started`` freezes what the start
    built and resumes the collector once the application is built (idp.cli.common
    ``app_context``); a command that builds none ends with the collector paused."""
    gc.disable()
    main()
