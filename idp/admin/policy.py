"""Admin console: policy pages."""

from __future__ import annotations
