"""Admin console: clients pages."""

from __future__ import annotations
