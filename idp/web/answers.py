"""An answer as WSGI takes it: a status, a list of headers and one body.

What the token side's endpoints answer (Authlib's ``handle_response``, userinfo): the direct
endpoints (idp.web.direct) write it to the server as it is, without the Werkzeug response object
and the header copies a Flask answer goes through (docs/performance-rounds.md, "The tenth round"); a
Flask view turns it into a response (``response``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, current_app
from werkzeug.http import HTTP_STATUS_CODES

from idp.services.dpop import DPOP_CHALLENGE

JSON = "application/json"
#: The challenge an endpoint's every refusal carries: the UserInfo endpoint's errors are RFC 6750
#: 3's (OIDC Core 5.3.3), which "MUST include the WWW-Authenticate response header field"; it
#: takes DPoP too, so the DPoP challenge follows (RFC 9449 7.2), the error with the Bearer one.
REFUSAL_CHALLENGES = {
    "oidc.userinfo": f'Bearer realm="idp", error="invalid_request", {DPOP_CHALLENGE}'
}


@dataclass(slots=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def of(cls, status: int, payload: Any, headers: Any) -> Answer:
        """Authlib's answer (``handle_response``'s arguments): a dict as the application's JSON,
        with the headers Authlib gives (its JSON answers name their ``Content-Type``)."""
        if isinstance(payload, dict):
            payload = current_app.json.dumps(payload)
        body = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
        return cls(status, list(headers or ()), body)

    @classmethod
    def json(cls, status: int, document: Any, *headers: tuple[str, str]) -> Answer:
        """``document`` as compact JSON, as Flask's ``jsonify`` writes it."""
        text = current_app.json.compact_text(document)  # type: ignore[attr-defined]
        return cls(status, [("Content-Type", JSON), *headers], f"{text}\n".encode())

    @classmethod
    def malformed_oauth_request(cls, status: int, description: str, endpoint: str) -> Answer:
        """An OAuth client's request to ``endpoint`` refused before the endpoint read it
        (malformed input, a body too large): RFC 6749 5.2's JSON ``invalid_request``, as the
        endpoint answers every other error, with the status the refusal has (400, 413), never
        stored (RFC 6749 5.1), and the challenge the endpoint's refusals carry."""
        answer = cls.json(
            status,
            {"error": "invalid_request", "error_description": description},
            ("Cache-Control", "no-store"),
        )
        challenge = REFUSAL_CHALLENGES.get(endpoint)
        if challenge is not None:
            answer.headers.append(("WWW-Authenticate", challenge))
        return answer

    def set(self, name: str, value: str) -> None:
        """Header ``name`` is ``value``, replacing any the answer has (Werkzeug's ``set``)."""
        lower = name.lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lower]
        self.headers.append((name, value))

    @property
    def status_line(self) -> str:
        # Werkzeug's status line, word for word.
        return f"{self.status} {HTTP_STATUS_CODES.get(self.status, 'unknown').upper()}"

    def wsgi_headers(self) -> list[tuple[str, str]]:
        """The headers with the body's length (Werkzeug adds it to a response of one body)."""
        return [*self.headers, ("Content-Length", str(len(self.body)))]

    def response(self) -> Response:
        """The same answer as a Flask response, for a view served through Flask."""
        return Response(self.body, status=self.status, headers=self.headers)
