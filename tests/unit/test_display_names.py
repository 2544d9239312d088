"""Names people choose: one line, no directional or other controls, nothing invisible as a name."""

from __future__ import annotations

import pytest

from idp.services.display_names import display_name

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joined by zero-width joiners


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("  Ada \n King ", "Ada King"),
        ("\u202enimda", "nimda"),  # shows as "admin" with the override
        ("\u2067Ada\u2069 \u200fKing", "Ada King"),
        ("\u200b\u200b", ""),  # zero-width spaces only
        ("\u2060 \u00a0", ""),
        (f"{FAMILY} family", f"{FAMILY} family"),
        ("Zoë", "Zoë"),
        ("Ada\x1b[31mKing", "Ada[31mKing"),  # ESC, a control (category Cc)
        ("Ada\x00\x07\x7f\x9b King", "Ada King"),  # NUL, BEL, DEL, a C1 control
        ("Ada\tKing\x85Lovelace\x1c", "Ada King Lovelace"),  # controls that are white space
        ("\x1b\x07", ""),
        (None, ""),
    ],
)
def test_a_name_is_kept_on_one_line_without_controls(typed: str | None, kept: str) -> None:
    assert display_name(typed, 200) == kept


def test_a_name_is_cut_at_its_limit() -> None:
    assert display_name("x" * 300, 60) == "x" * 60
