"""A device in words, from a User-Agent header: for sessions, the activity page and the default
name of a passkey whose authenticator is not recognised."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache


@lru_cache(maxsize=512)
def _parsed(user_agent: str) -> tuple[str, str, str]:
    """(browser, its major version, operating system) by ua-parser's regexes; "" when unknown."""
    from ua_parser import parse

    result = parse(user_agent[:512])
    agent, system = result.user_agent, result.os
    browser = agent.family if agent and agent.family != "Other" else ""
    version = agent.major if agent and agent.major else ""
    return browser, version or "", system.family if system and system.family != "Other" else ""


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
    return f"{device}, {now.day} {now:%b %Y}"
