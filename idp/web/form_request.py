"""Flask's request, with a shorter way to a URL-encoded form.

Werkzeug reads every form through the same machinery: a form parser object, a limited stream and
four look-ups of the application's limits through Flask's context proxies, built anew for each
request. A URL-encoded body, the form of every token, introspection, revocation and sign-in POST
(RFC 6749 4.1.3, RFC 7662 2.1, HTML's form submission), is one read of ``Content-Length`` bytes
and one ``parse_qsl``, which is all Werkzeug's own ``_parse_urlencoded`` does with it. That cost
about 35 microseconds of a request in-process (docs/performance.md, "Before and after, per
change"); this path reads the same bytes, parses them with the same call and answers every limit
and failure as Werkzeug does, by handing any other form body back to Werkzeug. A body that is no
form at all (JSON, or none) is an empty form without Werkzeug's parser, as Werkzeug's parser
answers it, and its stream is left for the view to read.
"""

from __future__ import annotations

from io import BytesIO
from urllib.parse import parse_qsl

from flask import Request
from werkzeug import urls  # noqa: F401 - registers the "werkzeug.url_quote" error handler
from werkzeug.exceptions import BadRequest, ClientDisconnected

FORM_URLENCODED = "application/x-www-form-urlencoded"
#: The bodies Werkzeug parses into ``request.form`` (HTML 4.01 17.13.4;
#: werkzeug.formparser.FormDataParser.parse).
FORM_TYPES = frozenset((FORM_URLENCODED, "multipart/form-data"))


class FormRequest(Request):
    #: ``MAX_CONTENT_LENGTH``, read once per application (``form_request_class``) instead of
    #: through ``current_app`` at every form.
    body_limit: int | None = None

    def _load_form_data(self) -> None:
        attributes = self.__dict__
        if "form" in attributes:
            return
        mimetype = self.mimetype
        if mimetype not in FORM_TYPES:
            # Werkzeug parses only these two into a form: any other body (JSON, none at all) is
            # an empty form and files, and its stream stays unread. Werkzeug would build the
            # stream and a form parser here to hand the same empty pair back; the stream is
            # built (and an oversized body refused, 413) when the body itself is read.
            storage = self.parameter_storage_class
            attributes["form"], attributes["files"] = storage(), storage()
            return
        # Only a body nobody read yet, announced by its length and within the limit; everything
        # else (multipart, chunked, too large, read before) takes Werkzeug's way, unchanged.
        length_text = self.environ.get("CONTENT_LENGTH", "")
        if (
            not length_text.isascii()
            or not length_text.isdigit()
            or "_cached_data" in attributes
            or "stream" in attributes
            or mimetype != FORM_URLENCODED
        ):
            super()._load_form_data()
            return
        length = int(length_text)
        if self.body_limit is not None and length > self.body_limit:
            super()._load_form_data()  # Werkzeug's 413
            return
        body = self.environ["wsgi.input"].read(length) if length else b""
        if len(body) < length:
            # As Werkzeug's limited stream: a client that sent less than it announced went away.
            raise ClientDisconnected()
        storage = self.parameter_storage_class
        try:
            # Werkzeug's _parse_urlencoded: blank values kept, undecodable bytes %-quoted.
            form = storage(
                parse_qsl(body.decode(), keep_blank_values=True, errors="werkzeug.url_quote")
            )
        except ValueError:
            # Werkzeug's parser is silent: a body that is not UTF-8 is an empty form.
            form = storage()
        attributes["stream"], attributes["form"], attributes["files"] = (
            BytesIO(b""),  # read: what is left of the body, as after Werkzeug's parse
            form,
            storage(),
        )


def form_request_class(max_content_length: int | None) -> type[FormRequest]:
    """The request class of one application, with its ``MAX_CONTENT_LENGTH``."""
    return type("FormRequest", (FormRequest,), {"body_limit": max_content_length})


def refuse_malformed_input(current: Request) -> None:
    """Refuse, with a calm 400, input no view can mean to handle:

    - a query string that is not UTF-8 (RFC 3986 2.5, WHATWG URL): Werkzeug decodes it strictly,
      so it would otherwise fail in whichever view first reads ``request.args``;
    - a NUL character in any parameter, the path's included (``/api/v1/clients/%00``: every id
      and name in a path is looked up): no protocol value, id, email, password or name holds
      one, and PostgreSQL text can neither store nor compare it (a database error, then a 500).
    """
    environ = current.environ
    sources = []
    if environ.get("QUERY_STRING"):
        query = current.query_string
        try:
            query.decode()
        except UnicodeDecodeError:
            raise BadRequest(description="The request's address is not valid UTF-8.") from None
        # A parameter holds a NUL only if the query does, raw or as %00 (RFC 3986 2.1): the rest
        # need not be parsed here and walked (docs/performance-rounds.md, "The twenty-sixth round").
        if b"%00" in query or b"\x00" in query:
            sources.append(current.args)
    # Only a form body has form fields; most requests (every GET, every JSON body) have none, and
    # reading ``request.form`` would build an empty one for them. No Content-Type, no form.
    if environ.get("CONTENT_TYPE") and current.mimetype in FORM_TYPES:
        sources.append(current.form)
    for source in sources:
        for key, values in source.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                raise BadRequest(description="The request contains a NUL character.")
    if any("\x00" in str(value) for value in (current.view_args or {}).values()):
        raise BadRequest(description="The request contains a NUL character.")
