"""axe-core (Deque's accessibility engine, installed by ``npm ci`` in tests/interop) run on a
Playwright page against WCAG 2.2 level A and AA: the rules tagged wcag2a, wcag2aa, wcag21a,
wcag21aa and wcag22aa (colour contrast, names and labels, ARIA, target size, ...).

axe is put into the page with ``page.evaluate`` of its source, which the DevTools protocol runs
outside the page's Content-Security-Policy: ``page.add_script_tag`` adds an inline ``<script>``,
which the policy of a page without a script nonce (``script-src 'none'``, the error pages) blocks,
and ``bypass_csp=True`` would audit the pages under a policy they never have. So the pages are
checked as served, and a CSP violation of their own still fails the browser tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page

INTEROP = Path(__file__).resolve().parents[1] / "interop"
AXE_JS = INTEROP / "node_modules" / "axe-core" / "axe.min.js"
#: WCAG 2.0, 2.1 and 2.2, levels A and AA (axe's tags; 2.2 added only AA rules to axe).
WCAG_22_AA = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
RUN = """(tags) => axe.run(document, { runOnly: { type: "tag", values: tags },
  resultTypes: ["violations"] }).then((results) => results.violations.map((v) => ({
    rule: v.id, impact: v.impact || "", help: v.help, url: v.helpUrl,
    nodes: v.nodes.map((n) => ({ target: n.target.map(String).join(" >> "),
      summary: (n.failureSummary || "").replace(/\\s+/g, " ").trim() })) })))"""


@dataclass(frozen=True)
class Violation:
    """One rule axe found broken, and where: each element's selector and what is wrong with it."""

    rule: str
    impact: str
    help: str
    url: str
    nodes: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        where = "".join(f"\n      {target}: {summary}" for target, summary in self.nodes)
        return f"  {self.rule} ({self.impact}): {self.help} <{self.url}>{where}"


def _source() -> str:
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: run `npm ci` in tests/interop (scripts/test.sh does)")
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(page: Page) -> list[Violation]:
    """The WCAG 2.2 A and AA violations axe finds on the page as it is now."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(_source())
    found = page.evaluate(RUN, list(WCAG_22_AA))
    return [
        Violation(
            rule=v["rule"],
            impact=v["impact"],
            help=v["help"],
            url=v["url"],
            nodes=tuple((n["target"], n["summary"]) for n in v["nodes"]),
        )
        for v in found
    ]


def describe(violations: dict[str, list[Violation]]) -> str:
    """Each page's violations, readably: the page, then each rule and the elements breaking it."""
    return "\n".join(
        f"{page}:\n" + "\n".join(str(v) for v in found) for page, found in violations.items()
    )
