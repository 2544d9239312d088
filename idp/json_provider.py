"""The application's JSON (``app.json``): Flask's, stricter about what it takes from clients and
with its encoders made once."""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response as SansioResponse

#: A NUL, which PostgreSQL text cannot hold, or a lone surrogate: RFC 8259 8.2 lets a string
#: spell one ("\ud800"), but it is no Unicode scalar value and has no UTF-8 form (RFC 3629 3), so
#: neither database can be sent it, and I-JSON (RFC 7493 2.1) refuses it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, stricter about what it accepts from clients: a document nested deeper than
    the parser's recursion limit, holding a NUL character or a lone surrogate, or a number that
    is no JSON number (``NaN``, ``Infinity``, or one too large for a double, which Python reads
    as infinity) is malformed input (``ValueError``, so ``get_json`` answers 400 or None) instead
    of a ``RecursionError`` or a database error. RFC 8259 6: "Numeric values that cannot be
    represented in the grammar below (such as Infinity and NaN) are not permitted"; PostgreSQL's
    json type refuses them, and a client's JWKS holding one was a 500 there."""

    def response(self, *args: Any, **kwargs: Any) -> SansioResponse:
        """``jsonify``: Flask's compact answer, written by one encoder made once (the settings
        are fixed once the application runs) instead of a new encoder per answer."""
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)  # indented, as Flask's
        body = self.compact_text(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(f"{body}\n", mimetype=self.mimetype)

    def compact_text(self, document: Any) -> str:
        """``document`` as ``jsonify`` writes it when compact (without its closing newline)."""
        return self._compact_encoder.encode(document)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``flask.json.dumps``: without arguments of its own (Authlib's token, introspection and
        error answers), the same text as Flask's, from one encoder made once instead of a new
        encoder per call (``json.dumps`` makes one whenever it is given an argument)."""
        if kwargs:
            return super().dumps(obj, **kwargs)
        return self._encoder.encode(obj)

    @functools.cached_property
    def _encoder(self) -> json.JSONEncoder:
        # What ``json.dumps(obj, default=..., ensure_ascii=..., sort_keys=...)`` makes per call.
        return json.JSONEncoder(
            default=self.default, ensure_ascii=self.ensure_ascii, sort_keys=self.sort_keys
        )

    @functools.cached_property
    def _compact_encoder(self) -> json.JSONEncoder:
        return json.JSONEncoder(
            default=self.default,
            ensure_ascii=self.ensure_ascii,
            sort_keys=self.sort_keys,
            separators=(",", ":"),
        )

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_constant", _no_constant)
        kwargs.setdefault("parse_float", _finite_float)
        if isinstance(s, bytes | bytearray):
            # What ``json.loads`` does with bytes (RFC 8259 8.1, and UTF-16 and UTF-32 as Python
            # reads them), done here so that the text is at hand for ``_holds_unstorable_text``.
            s = s.decode(json.detect_encoding(s), "surrogatepass")
        try:
            value = super().loads(s, **kwargs)
        except RecursionError as error:
            raise ValueError("JSON document nested too deeply") from error
        if _holds_unstorable_text(value, s):
            raise ValueError("JSON document contains a NUL character or a lone surrogate")
        return value


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python's parser takes and JSON has not."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise ValueError(f"{text} is too large a number")
    return value


def _holds_unstorable_text(value: Any, source: str) -> bool:
    """Whether a string of ``value``, the document ``source`` parsed, holds a NUL or a lone
    surrogate. Only a ``\\u`` escape (RFC 8259 7) can put one into a string whose source text
    holds neither: a source text without that escape and without either character, which is
    nearly every client's document (a passkey's answer is base64url and ASCII), needs no walk
    through its strings (docs/performance-rounds.md, "The twenty-sixth round")."""
    if "\\u" not in source and not _UNSTORABLE.search(source):
        return False
    pending = [value]
    while pending:  # iterative: the document may be nested close to the recursion limit
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
