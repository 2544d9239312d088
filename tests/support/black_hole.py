"""Packets to and from one local port dropped, as a network partition or a vanished host drops
them: nothing answers, nothing is refused, and unlike a proxy that stops forwarding (whose kernel
still acknowledges every byte, tests/support/tcp_proxy.py) nothing is acknowledged either, so
only the client's own TCP timeouts can end its wait.

Two ``iptables`` rules on the loopback interface for the port of a proxy the test started
(never the machine's services), tagged with a comment of their own and removed when the block
ends, whatever happened inside it. Needs root and ``iptables``: ``unavailable`` says why not."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

IPTABLES = shutil.which("iptables") or "/usr/sbin/iptables"


def _rules(port: int) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"idp-test-black-hole-{port}", "-j", "DROP"]
    return [["INPUT", "-i", "lo", "-p", "tcp", f"--{end}", str(port), *tag]
            for end in ("dport", "sport")]  # fmt: skip


def unavailable() -> str | None:
    """Why packets cannot be dropped here, or None."""
    if os.geteuid() != 0:
        return "dropping packets needs root (iptables)"
    if not os.path.exists(IPTABLES):
        return "iptables is not installed"
    probe = subprocess.run([IPTABLES, "-L", "INPUT", "-n"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"iptables cannot be used: {probe.stderr.decode(errors='replace').strip()}"
    return None


@contextmanager
def black_hole(port: int) -> Iterator[None]:
    """Drop every packet to and from ``port`` on the loopback interface inside the block."""
    added = []
    try:
        for rule in _rules(port):
            subprocess.run([IPTABLES, "-I", *rule], check=True, capture_output=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run([IPTABLES, "-D", *rule], check=False, capture_output=True)
