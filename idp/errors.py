"""The common base of the domain's refusals."""

from __future__ import annotations


class DomainError(ValueError):
    """A rule of idp refused what was asked; the message says why, in words for the person who
    asked, and names no secret. Each service's error class derives from it, so that a surface
    turns every refusal into its own kind of error in one place (the command line: ``idp.cli``'s
    ``LazyGroup.invoke``). A ``ValueError``, as each of those classes was before."""


class StaleVersionError(Exception):
    """A change to be made only onto the version its caller read found another change made first
    (RFC 9110 13.1.1); the message names what changed. Not a ``DomainError``: no rule refused
    the change, which may well apply once read again."""
