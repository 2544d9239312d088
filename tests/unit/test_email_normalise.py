"""``normalise_email`` skips the parser for plain ASCII (idp.services.email_addresses): the
look-up form must be the one the parser gives, for every address a user may type."""

from __future__ import annotations

import random
import string

import pytest

from idp.services.email_addresses import EmailAddressError, normalise_email, parse_email_address


def _parsed(value: str) -> str:
    """The look-up form through the parser alone (``normalise_email`` before its short cut)."""
    try:
        return parse_email_address(value, allow_local_domains=True)
    except EmailAddressError:
        return value.strip(" ").lower()


@pytest.mark.parametrize(
    "typed",
    [
        "a@b.com", "A@B.COM ", " a@b.test", "a@localhost", "a@x.localhost", "a..b@c.com",
        "a@c.com.", "a@-c.com", ".a@c.com", "a@[1.2.3.4]", '"a"@b.com', "a@b", "a@b.local",
        "a@B.Example.", "x" * 250 + "@b.com", "a@xn--bcher-kva.example",
        "a@XN--BCHER-KVA.example", "a+b@sub.example.co.uk", "a@b.invalid", "\u03a9@b.com",
        "a@b\u00fccher.example", "a\r\n@b.com", "a@b.com\x00", "", "   ",
    ],
)  # fmt: skip
def test_the_short_cut_gives_the_parser_s_look_up_form(typed: str) -> None:
    assert normalise_email(typed) == _parsed(typed)


def test_random_ascii_gives_the_parser_s_look_up_form() -> None:
    alphabet = string.ascii_letters[:6] + "ABxX.-_+@ \t\r\n\"'()<>[],;:!#$%&*/=?^`{|}~0129\x7f\x00"
    tails = [".com", ".test", ".localhost", "", ".Co", ".xn--p1ai", ".local", "."]
    rnd = random.Random(20)  # noqa: S311 - a reproducible sample, not a secret
    for _ in range(5000):
        typed = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 14)))
        if rnd.random() < 0.7:
            domain = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8)))
            typed += "@" + domain + rnd.choice(tails)
        assert normalise_email(typed) == _parsed(typed), typed
