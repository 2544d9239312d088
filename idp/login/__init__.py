"""The sign-in surface."""
