"""The end-user portal."""
