"""Admin console: audit pages."""

from __future__ import annotations
