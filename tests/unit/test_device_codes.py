"""User codes of the device authorization grant (RFC 8628 6.1): generated from a set without
vowels and look-alikes, shown in two halves, and read back whatever the person typed."""

from __future__ import annotations

import pytest

from idp.services.device import (
    USER_CODE_ALPHABET,
    format_user_code,
    new_user_code,
    normalise_user_code,
)


def test_user_codes_use_eight_letters_without_vowels_or_look_alikes() -> None:
    assert not set(USER_CODE_ALPHABET) & set("AEIOUY0123456789")
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200  # random, not a counter
    for code in codes:
        assert len(code) == 8
        assert set(code) <= set(USER_CODE_ALPHABET)


def test_user_codes_are_shown_in_two_halves() -> None:
    assert format_user_code("WDJBMJHT") == "WDJB-MJHT"


@pytest.mark.parametrize(
    "typed", ["WDJB-MJHT", "wdjb-mjht", "wdjbmjht", " WDJB MJHT ", "Wd Jb-Mj Ht"]
)
def test_typed_codes_ignore_case_dashes_and_spaces(typed: str) -> None:
    assert normalise_user_code(typed) == "WDJBMJHT"


@pytest.mark.parametrize(
    "typed", ["", "WDJB-MJH", "WDJB-MJHTX", "WDJB-MJH0", "AEIO-UBCD", "WDJB_MJHT"]
)
def test_what_cannot_be_a_user_code_is_refused_before_any_lookup(typed: str) -> None:
    assert normalise_user_code(typed) is None
