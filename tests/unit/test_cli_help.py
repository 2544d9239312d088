"""``idp --help`` and every command's help read whole: each command's sentence in its group's
list, a help text for every option, the short form ``idp login-link EMAIL`` in its usage line."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from idp.cli import main


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None
            yield from _commands(sub, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    return command


COMMAND_LINES = list(_commands(main))


def _help(path: tuple[str, ...]) -> str:
    # 80 columns, a terminal's usual width: where click cut a long sentence with "...".
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="idp", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [p for p in COMMAND_LINES if isinstance(_command(p), click.Group)],
                         ids=lambda p: " ".join(("idp", *p)))  # fmt: skip
def test_a_group_lists_each_command_with_its_whole_sentence(path: tuple[str, ...]) -> None:
    listing = _help(path).split("Commands:\n", 1)[1]
    assert [line for line in listing.splitlines() if line.rstrip().endswith("...")] == []


@pytest.mark.parametrize("path", COMMAND_LINES, ids=lambda p: " ".join(("idp", *p)))
def test_every_option_says_what_it_does(path: tuple[str, ...]) -> None:
    silent = [
        param.opts[0]
        for param in _command(path).params
        if isinstance(param, click.Option) and not param.help
    ]
    assert silent == []


@pytest.mark.parametrize("path", COMMAND_LINES, ids=lambda p: " ".join(("idp", *p)))
def test_no_help_shows_markup_meant_for_sphinx(path: tuple[str, ...]) -> None:
    assert "``" not in _help(path)


def test_login_link_help_shows_its_short_form() -> None:
    text = _help(("login-link",))
    assert "Usage: idp login-link [OPTIONS] EMAIL | COMMAND [ARGS]..." in text
    assert "`idp login-link EMAIL` is short for `idp login-link issue EMAIL`." in text
