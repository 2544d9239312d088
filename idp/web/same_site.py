"""A form a relying party's page posts to idp, sent again from idp's own page so that the browser
sends idp's session cookie with it.

The session cookie is ``SameSite=Lax`` (idp.web.sessions): a browser sends it with a top-level
GET from another site (a relying party sending the user to /authorize or /logout) but not with a
POST from another site (RFC 6265bis 5.6.7.1). OIDC Core 3.1.2.1 and RP-Initiated Logout 1.0
section 2 require both endpoints to take POST as well as GET; posted from the relying party's
page, such a request reached idp without the session: the authorization endpoint asked a
signed-in user to sign in again (``prompt=none``: ``login_required``), and the logout ended
nothing and redirected back as if it had. Fetch Metadata's ``Sec-Fetch-Site: cross-site`` says
the browser made such a request; idp answers it with a page that posts the same fields to the
same address from its own origin, a same-origin request that carries the cookie. A browser that
sends no Fetch Metadata is answered as before.

Nothing is gained by whoever posts across sites: the same request as a top-level GET, which
every site may send, carries the cookie already; a form of idp's own pages posted from another
site still lacks the CSRF token it needs.
"""

from __future__ import annotations

from flask import Request, Response, render_template

from idp.web.sessions import session_cookie_name


def posted_without_the_session(request: Request) -> bool:
    """Whether ``request`` is a POST another site's page made, without idp's session cookie (the
    browser withheld it: SameSite=Lax)."""
    return (
        request.method == "POST"
        and request.headers.get("Sec-Fetch-Site") == "cross-site"
        and session_cookie_name() not in request.cookies
    )


def posted_again(request: Request) -> Response:
    """The page that posts ``request``'s form again, every field in order (a repeated one too, so
    that the endpoint refuses it as it would have), to the same address and query."""
    action = request.script_root + request.path
    if request.query_string:
        action += "?" + request.query_string.decode("latin-1")
    fields = list(request.form.items(multi=True))
    page = render_template(
        "self_posting_form.html",
        heading="Continuing",
        form_id="same-site-resubmission",
        action=action,
        fields=fields,
    )
    return Response(page)
