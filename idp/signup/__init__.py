"""Joining: accepting an admin's invite, and self-service sign-up where the policy allows it."""
