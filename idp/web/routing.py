"""URL rules whose builders are made when ``url_for`` first needs them.

Werkzeug turns each rule into two URL builders (with and without unknown arguments appended as a
query string) as the rule joins the map: Python source made from the rule and compiled, about a
quarter of a millisecond each (werkzeug/routing/rules.py, ``Rule._compile_builder``). idp's
application has about 130 rules, so every process that builds it spent some 60 ms, a twelfth of
an ``idp`` command's start, on about 260 builders, while a command builds URLs for a few rules
at most, and a server's worker for the few dozen its pages link to. Matching (the rule's regular
expression) is made when the rule is added, as before: only building waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule

Builder = Callable[..., tuple[str, str]]


class BuiltOnFirstUseRule(Rule):
    """A rule whose builders are compiled at their first call (the module's docstring). Two
    threads that build the same rule's first URL at once may both compile it; either builder
    serves."""

    def _compile_builder(self, append_unknown: bool = True) -> Builder:
        compile_builder = super()._compile_builder
        compiled: Builder | None = None

        # Werkzeug binds what this returns to the rule (``__get__``), as it binds the compiled
        # builder, which takes the rule first.
        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            nonlocal compiled
            if compiled is None:
                compiled = compile_builder(append_unknown)
            return compiled(rule, *args, **kwargs)

        return build
