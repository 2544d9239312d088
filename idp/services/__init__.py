"""Decisions, with no Flask imports: each service takes its collaborators (database session,
settings, clock) as arguments so that it can be tested on its own."""
