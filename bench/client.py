"""A small HTTP/1.1 client for the load generator: one keep-alive connection and a cookie jar per
simulated browser, on the standard library's ``http.client``.

``requests`` costs the generator about as much CPU per request as idp's cheapest endpoints cost
the server; on a machine whose cores the generator shares with the server, that would make the
generator the limit. This client does only what the flows need: methods, form and JSON bodies,
basic auth, cookies (host-only, one host), no redirects followed automatically.
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Browser:
    """One simulated browser (or relying-party back end): a connection and its cookies."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.host_header = parts.netloc
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def forget_cookies(self) -> None:
        self.cookies.clear()

    def request(
        self,
        method: str,
        target: str,
        *,
        params: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        basic: tuple[str, str] | None = None,
    ) -> Reply:
        path = target[len(self.base_url) :] if target.startswith(self.base_url) else target
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        sent = {"Host": self.host_header, "Accept": "*/*"}
        body: bytes | None = None
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        if body is not None or method == "POST":
            sent["Content-Length"] = str(len(body or b""))
        if basic is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        sent.update(headers or {})
        for attempt in (1, 2):
            connection = self._connection_for_request()
            try:
                connection.request(method, path, body=body, headers=sent)
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: one retry on a new one.
                self.close()
                if attempt == 2:
                    raise
                continue
            break
        self._store_cookies(response.msg.get_all("Set-Cookie") or [])
        if response.will_close:
            self.close()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, reply_headers, data)

    def get(self, target: str, **kwargs: Any) -> Reply:
        return self.request("GET", target, **kwargs)

    def post(self, target: str, **kwargs: Any) -> Reply:
        return self.request("POST", target, **kwargs)

    def _connection_for_request(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, self.timeout)
        return self._connection

    def _store_cookies(self, lines: list[str]) -> None:
        for line in lines:
            first, _, attributes = line.partition(";")
            name, _, value = first.strip().partition("=")
            lowered = attributes.lower()
            if "max-age=0" in lowered or "expires=thu, 01 jan 1970" in lowered:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
