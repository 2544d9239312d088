"""``idp groups`` and ``idp clients --allowed-group/--claim-map`` against a live server's database
(SQLite and PostgreSQL): ``--json`` output, the same rules as the console, refusals that change
nothing, and concurrent adds and removes of one membership, each done once. The commands run in
this process (Click's CliRunner), but the concurrent ones: separate ``idp`` processes, as
operators' scripts would run them."""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.live import CliError, LiveIdp

PARALLEL = 4


def _email() -> str:
    return f"{secrets.token_hex(4)}@example.com"


def _create_user(live: LiveIdp, email: str, password: str) -> None:
    live.run_in_process("users", "create", email, "--password-stdin", input=password + "\n")


def _group(live: LiveIdp) -> str:
    name = f"g-{secrets.token_hex(3)}"
    created = live.cli_in_process("groups", "create", name, "--display-name", "Team", "--json")
    assert created["name"] == name
    assert created["members"] == []
    return name


def test_groups_commands_with_json(live: LiveIdp) -> None:
    name = _group(live)
    first, second = _email(), _email()
    _create_user(live, first, "a long enough password")
    _create_user(live, second, "a long enough password")
    added = live.cli_in_process("groups", "add", name, first, second, "--json")
    assert added == {"group": name, "added": [first, second], "unchanged": []}
    again = live.cli_in_process("groups", "add", name, first, "--json")
    assert again == {"group": name, "added": [], "unchanged": [first]}
    listed = {g["name"]: g for g in live.cli_in_process("groups", "list", "--json")}
    assert listed[name]["member_count"] == 2
    renamed = f"{name}-new"
    assert live.cli_in_process("groups", "rename", name, renamed, "--json")["name"] == renamed
    shown = live.cli_in_process("groups", "show", renamed, "--json")
    assert sorted(shown["members"]) == sorted([first, second])
    removed = live.cli_in_process("groups", "remove", renamed, second, "--json")
    assert removed["removed"] == [second]
    deleted = live.cli_in_process("groups", "delete", renamed, "--json")
    assert deleted["deleted"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["groups", "create", "Not A Slug"], "invalid group name"),
        (["groups", "add", "no-such-group", "x@example.com"], "no group"),
        (["groups", "remove", "no-such-group", "x@example.com"], "no group"),
        (["groups", "rename", "no-such-group", "other"], "no group"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    live: LiveIdp, args: list[str], message: str
) -> None:
    with pytest.raises(CliError, match=message):
        live.run_in_process(*args)


def test_unknown_user_in_add_changes_nothing(live: LiveIdp) -> None:
    name = _group(live)
    known = _email()
    _create_user(live, known, "a long enough password")
    with pytest.raises(CliError, match="no user ghost-"):
        live.run_in_process("groups", "add", name, known, f"ghost-{known}")
    assert live.cli_in_process("groups", "show", name, "--json")["members"] == []


def test_client_options_set_allowed_groups_and_claim_maps(live: LiveIdp) -> None:
    name = _group(live)
    client = live.cli_in_process(
        "clients", "create", "--name", "Grafana", "--redirect-uri", "https://grafana.example/cb",
        "--scope", "openid", "--scope", "groups", "--allowed-group", name,
        "--claim-map", f"roles:{name}=Admin", "--json",
    )  # fmt: skip
    assert client["allowed_groups"] == [name]
    assert client["claim_maps"] == [f"roles:{name}=Admin"]
    with pytest.raises(CliError, match="registered JWT or OpenID Connect claim"):
        live.run_in_process(
            "clients", "edit", client["client_id"], "--claim-map", f"email:{name}=x"
        )
    with pytest.raises(CliError, match="no group"):
        live.run_in_process(
            "clients", "edit", client["client_id"], "--allowed-group", "no-such-group"
        )
    unchanged = live.cli_in_process("clients", "show", client["client_id"], "--json")
    assert unchanged["allowed_groups"] == [name]
    assert unchanged["claim_maps"] == [f"roles:{name}=Admin"]
    with pytest.raises(CliError, match=r"only allowed group of Grafana"):
        live.run_in_process("groups", "delete", name)
    everyone = live.cli_in_process(
        "clients", "edit", client["client_id"], "--allow-everyone", "--json"
    )
    assert everyone["allowed_groups"] is None
    assert live.cli_in_process("groups", "delete", name, "--json")["deleted"] is True


def _audited(live: LiveIdp, kind: str, group: str) -> list[dict[str, Any]]:
    lines = live.run_in_process("audit", "export", "--kind", kind).stdout.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if e.get("details", {}).get("group") == group]


def test_concurrent_adds_and_removes_of_one_membership_each_happen_once(live: LiveIdp) -> None:
    name = _group(live)
    email = _email()
    _create_user(live, email, "a long enough password")

    def run_all(action: str) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(
                pool.map(lambda _: live.cli("groups", action, name, email, "--json"),
                         range(PARALLEL))
            )  # fmt: skip

    added = run_all("add")
    assert sorted(len(r["added"]) for r in added) == [0] * (PARALLEL - 1) + [1]
    assert live.cli_in_process("groups", "show", name, "--json")["members"] == [email]
    removed = run_all("remove")
    assert sorted(len(r["removed"]) for r in removed) == [0] * (PARALLEL - 1) + [1]
    assert live.cli_in_process("groups", "show", name, "--json")["members"] == []
    assert len(_audited(live, "group.member_added", name)) == 1
    assert len(_audited(live, "group.member_removed", name)) == 1
