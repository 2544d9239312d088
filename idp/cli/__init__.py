"""The ``idp`` command: init, serve, users, clients, keys. Scriptable; ``--json`` prints data.

One module per command group; :data:`COMMANDS` names them and :class:`LazyGroup` imports
only the one a command line asks for, so that ``idp --help`` and each command start without
importing every other group's services."""

from __future__ import annotations

import importlib

import click

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


class LazyGroup(click.Group):
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
