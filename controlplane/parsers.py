"""The API's JSON parser: bounded nesting and finite numbers, checked before any view runs.

Python's ``json`` recurses once per nesting level, so a body of a thousand ``[`` would reach
the interpreter's recursion limit (a 500) and every recursive walk after it; and a literal such
as ``1e309`` parses to infinity, which no database column takes. Both are refused here with a
400: too deep a body before ``json`` sees it (a linear scan of its brackets outside strings),
a non-finite number naming where it is (``{"result": {"loss": ["Must be a finite number."]}}``).
"""
from __future__ import annotations

import codecs
import json
import math
import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser, get_encoding

#: A JSON string literal (escapes included), written so that the regex never backtracks.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_CHANGE = {"[": 1, "{": 1, "]": -1, "}": -1}

NOT_FINITE = "Must be a finite number."


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True if ``text`` nests arrays and objects more than ``limit`` deep (strings ignored).

    Linear in the text and never recursive; malformed JSON is left for the parser to refuse.
    """
    if text.count("[") + text.count("{") <= limit:  # most bodies: no scan needed
        return False
    if '\\"' in text:  # an escaped quote: find where strings end with the full regex
        outside = _STRING.sub("", text)
    else:  # quotes alternate: every other piece is outside strings (much faster)
        outside = "".join(text.split('"')[0::2])
    brackets = _NOT_BRACKET.sub("", outside)
    # The running depth after each bracket, in C (a Python loop over them was the parser's
    # largest cost on a metric batch).
    return max(accumulate(map(_DEPTH_CHANGE.__getitem__, brackets)), default=0) > limit


def _non_finite_path(data: Any) -> list[str] | None:
    """The path (keys and indexes) of the first non-finite number in ``data``, iteratively."""
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        if isinstance(value, dict):
            stack.extend((item, path + [str(key)]) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, path + [str(i)]) for i, item in enumerate(value))
    return None


def _nested_error(path: list[str], message: str) -> dict | list:
    detail: dict | list = [message]
    for key in reversed(path):
        detail = {key: detail}
    return detail if path else {"non_field_errors": [message]}


class BoundedJSONParser(JSONParser):
    """JSON with at most ``settings.ESTUARY["MAX_JSON_DEPTH"]`` levels and finite numbers only.

    A non-finite number answers 400 keyed by its path, as a serializer's error would be.
    """

    #: Subclasses that let NaN and Infinity through to a serializer that names them set this.
    allow_non_finite = False

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        limit = settings.ESTUARY["MAX_JSON_DEPTH"]
        if json_depth_exceeds(text, limit):
            raise ParseError(f"JSON nested more than {limit} levels deep.")
        non_finite = 0

        def parse_float(literal: str) -> float:
            nonlocal non_finite
            number = float(literal)
            non_finite += not math.isfinite(number)  # 1e309 overflows to infinity
            return number

        def parse_constant(name: str) -> float:  # NaN, Infinity, -Infinity: not JSON
            nonlocal non_finite
            non_finite += 1
            return float(name.replace("Infinity", "inf"))

        try:
            if self.allow_non_finite:
                return json.loads(text)
            data = json.loads(text, parse_float=parse_float, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if non_finite:  # only then walk the body, to name where the number is
            raise ValidationError(_nested_error(_non_finite_path(data) or [], NOT_FINITE))
        return data
