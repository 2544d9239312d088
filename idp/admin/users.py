"""Admin console: users pages."""

from __future__ import annotations
