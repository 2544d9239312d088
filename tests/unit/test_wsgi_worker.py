"""What a server's worker does when it imports idp.wsgi (a fresh interpreter: this one holds
the test suite's objects)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import last_line_after_init


def test_a_worker_freezes_its_start_up_objects_out_of_the_collector_s_full_collections(
    tmp_path: Path,
) -> None:
    """A full collection walks every object the collector tracks and holds the GIL while it
    does: with the start-up's objects frozen it walks only what the requests made since."""
    printed = last_line_after_init(
        tmp_path,
        "import gc\nimport idp.wsgi\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), int(gc.isenabled()))",
    )
    frozen, tracked, collecting = map(int, printed.split())
    assert frozen > 100_000
    assert tracked < 1_000
    assert collecting == 1  # paused for the start only


def test_a_worker_computes_the_stand_in_hash_for_no_account_before_its_first_request(
    tmp_path: Path,
) -> None:
    """The first password for no account costs what any other does (docs/security.md): the
    worker hashes the stand-in as it starts (PasswordService.warm), where an ``idp`` command,
    which verifies no password, does not."""
    printed = last_line_after_init(
        tmp_path,
        "import idp.wsgi\nprint(idp.wsgi.app.extensions['idp'].passwords._stand_in_hash[:10])",
    )
    assert printed == "$argon2id$"
