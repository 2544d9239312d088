"""A device in words, from a User-Agent header: for sessions, the activity page and the default
name of a passkey whose authenticator is not recognised."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from idp.services.display_names import display_name

#: At most this many characters of each part read from a User-Agent (browser, version, system).
PART_LENGTH = 40
#: At most this many of the device in a passkey's default name.
DEVICE_LENGTH = 45


@lru_cache(maxsize=512)
def _parsed(user_agent: str) -> tuple[str, str, str]:
    """(browser, its major version, operating system) by ua-parser's regexes; "" when unknown."""
    from ua_parser import parse

    result = parse(user_agent[:512])
    agent, system = result.user_agent, result.os
    browser = agent.family if agent and agent.family != "Other" else ""
    version = agent.major if agent and agent.major else ""
    family = system.family if system and system.family != "Other" else ""
    # Some regexes capture what the browser sent whole (``^(.*)/... CFNetwork``): each part is
    # cleaned and bounded as a name is (idp.services.display_names: no directional or control
    # characters, Unicode Standard Annex 9, RFC 8264 9.12), since it is shown in the portal, the
    # console, exports and a new passkey's default name.
    cleaned = [display_name(part, PART_LENGTH) for part in (browser, version, family)]
    return cleaned[0], cleaned[1], cleaned[2]


def describe_user_agent(user_agent: str) -> str:
    """ "Chrome 156 on Linux" from a User-Agent header."""
    browser, version, system = _parsed(user_agent)
    described = f"{browser or 'Unknown browser'}{f' {version}' if version else ''}"
    return f"{described} on {system}" if system else described


def default_passkey_name(user_agent: str, now: datetime, fallback: str = "Passkey") -> str:
    """ "Chrome on Linux, 2 Dec 2026": a name that tells two unrecognised passkeys apart (the
    browser and system they were made on, and the day), until the user gives a better one."""
    browser, _version, system = _parsed(user_agent)
    device = " on ".join(part for part in (browser, system) if part) or fallback
    # With ", 31 Dec 2026" within a passkey name's 60 characters (passkey_names.MAX_NAME_LENGTH).
    return f"{display_name(device, DEVICE_LENGTH)}, {now.day} {now:%b %Y}"
