"""The device flow's verification page (RFC 8628 3.3)."""
