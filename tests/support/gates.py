"""The test's side of ``idp.request_gate``: hold chosen requests of a live server in flight, know
when they are, and let them go. Every wait is for an event; its deadline only fails the test when
the event never comes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idp.request_gate import ENVIRONMENT_VARIABLE, HEADER
from tests.support.events import wait_for


@dataclass(frozen=True)
class RequestGates:
    directory: Path

    @classmethod
    def under(cls, parent: Path) -> RequestGates:
        directory = parent / "request-gates"
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory)

    def env(self) -> dict[str, str]:
        """For the server's environment (``start_live_idp(env=...)``)."""
        return {ENVIRONMENT_VARIABLE: str(self.directory)}

    @staticmethod
    def header(name: str) -> dict[str, str]:
        """For the request to hold."""
        return {HEADER: name}

    def wait_until_held(self, *names: str) -> set[int]:
        """Wait until every named request is held in the application; the pids of their
        workers."""
        arrived = [self.directory / f"{name}.arrived" for name in names]
        wait_for(lambda: all(path.exists() for path in arrived), f"{names} held in flight")
        return {int(path.read_text()) for path in arrived}

    def open(self, *names: str) -> None:
        for name in names:
            (self.directory / f"{name}.open").touch()
