"""What an error page says: words for a person, for each HTTP status idp answers with a page."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

#: What a person reads for an HTTP error, instead of Werkzeug's titles ("Not Found") and
#: default descriptions ("The requested URL was not found on the server. If you entered the URL
#: manually please check your spelling and try again."), written for a developer.
ERROR_WORDING: dict[int, tuple[str, str]] = {
    400: ("This request cannot be handled",
          "Something in the address or the form was not as expected. Go back and try again."),
    401: ("Sign in first", "This page needs you to be signed in."),
    403: ("Not for this account", "This account cannot open this page."),
    404: ("Page not found",
          "There is nothing at this address. Check the link, or start again from the sign-in "
          "page."),
    405: ("This page cannot do that", "Go back to the previous page and try again."),
    413: ("Too much to send", "What you sent is larger than idp accepts."),
    429: ("Too many attempts", "Wait a moment, then try again."),
}  # fmt: skip


def error_wording(error: HTTPException) -> tuple[str, str]:
    """The page's title and message: ours for the status, with the view's own description when
    it gave one (abort(404, description=...)) rather than Werkzeug's default."""
    title, message = ERROR_WORDING.get(error.code or 500, (error.name, error.description or ""))
    if error.description and error.description != type(error).description:
        message = error.description
    return title, message
