"""The console's overview says what each of its tabs is for: a new admin lands there first
(docs/admins.md, "The first admin") and reads it to find their way."""

from __future__ import annotations

import html
import re

from flask import Flask

from tests.support.admin import passkey_browser

NAV = re.compile(r'<nav class="tabs" aria-label="Admin">(.*?)</nav>', re.S)
TAB = re.compile(r"<a [^>]*>([^<]+)</a>")
EXPLAINED = re.compile(r"<li><strong>([^<]+)</strong>: ")


def test_the_overview_explains_every_tab_of_the_console(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    page = admin.browser.get("/admin")
    assert page.status_code == 200
    nav = NAV.search(page.text)
    assert nav is not None
    tabs = [html.unescape(t) for t in TAB.findall(nav.group(1))]
    # The overview itself and the admin's own portal need no line of their own.
    expected = [t for t in tabs if t not in ("Overview", "My account")]
    assert "Groups" in expected
    assert "API tokens" in expected
    assert [html.unescape(t) for t in EXPLAINED.findall(page.text)] == expected
