"""IAM's wildcard matching: `*` any run of characters (also none), `?` exactly one (pure)."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(value: str, pattern: str, *, ignore_case: bool = False) -> bool:
    """True when `value` matches `pattern` as a whole. Patterns are cached (bounded LRU), so
    the policies evaluated on every request compile once."""
    if "*" not in pattern and "?" not in pattern:
        return value.lower() == pattern.lower() if ignore_case else value == pattern
    return _pattern(pattern, ignore_case).fullmatch(value) is not None
