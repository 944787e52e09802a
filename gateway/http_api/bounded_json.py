"""JSON request bodies parsed with a bound on how many values they hold, off the event loop.

`json.loads` builds every value before anyone can count them: a 20 MB body of `[[],[],...]` is
10 M lists (RSS 4.3 GB), which pydantic then walked for 81 s with the event loop, health included,
frozen. This parser counts array entries and object members as it meets them and stops at the
first one past the bound, so a hostile body costs at most that many values; it runs in a worker
thread, so the loop keeps answering while it does. Strings are still read by the C scanner, so a
body of a few large data URIs parses as fast as with `json.loads`.
"""

from __future__ import annotations

import asyncio
import json
import json.decoder
import json.scanner
from collections.abc import Callable
from typing import Any


class TooManyValues(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} JSON values")
        self.limit = limit


class NotJson(ValueError):
    """The body is not valid JSON (or nests deeper than Python can follow)."""


Scan = Callable[[str, int], tuple[Any, int]]


class _CountingDecoder(json.JSONDecoder):
    def __init__(self, max_values: int) -> None:
        super().__init__()
        self.values = 0
        self.max_values = max_values
        self.parse_array = self._array
        self.parse_object = self._object
        # the pure-Python scanner: the C one ignores parse_array and parse_object
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]

    def _counting(self, scan_once: Scan) -> Scan:
        def scan(string: str, index: int) -> tuple[Any, int]:
            self.values += 1
            if self.values > self.max_values:
                raise TooManyValues(self.max_values)
            return scan_once(string, index)

        return scan

    def _array(self, s_and_end: tuple[str, int], scan_once: Scan) -> tuple[list[Any], int]:
        return json.decoder.JSONArray(s_and_end, self._counting(scan_once))  # type: ignore[attr-defined,no-any-return]

    def _object(self, s_and_end: tuple[str, int], strict: bool, scan_once: Scan, *rest: Any) -> tuple[Any, int]:
        return json.decoder.JSONObject(s_and_end, strict, self._counting(scan_once), *rest)  # type: ignore[attr-defined,no-any-return]


def parse(body: bytes, max_values: int) -> Any:
    """The JSON value in `body`; TooManyValues past `max_values` array entries and object members
    together, NotJson for anything that is not JSON."""
    try:
        return _CountingDecoder(max_values).decode(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise NotJson(str(error)) from None


async def parse_off_loop(body: bytes, max_values: int) -> Any:
    return await asyncio.to_thread(parse, body, max_values)
