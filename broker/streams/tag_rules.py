"""The characters AWS accepts in Kinesis tag keys and values (pure).

Two refusals, both InvalidArgumentException, in this order (AWS as kinesalite recorded it, in
its later recordings that added the colon AWS allows, as in `aws:` keys):
a character outside "Unicode letters, digits, white space, _ . / = + - % @ :" (the letters are
the Unicode blocks U+00C0-U+1FFF and U+2C00-U+D7FF; white space is the space only, so a tab
or a newline is refused), then any `%`, which the first message lists but AWS still refuses,
with a message that names the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from broker import error_messages
from broker.errors import ErrorCode, ShoalError

_ALLOWED = re.compile(r"[\u00C0-\u1FFF\u2C00-\uD7FFA-Za-z0-9_./=+\- @%:]*")

ADD = "add tags to"
REMOVE = "remove tags from"


def check_tag_characters(
    texts: Iterable[str], *, verb: str, stream_name: str, account_id: str
) -> None:
    """Raises AWS's InvalidArgumentException when any key or value breaks the rules."""
    texts = list(texts)
    if any(_ALLOWED.fullmatch(text) is None for text in texts):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.TAG_INVALID_CHARACTERS)
    if any("%" in text for text in texts):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.tag_percent_refused(verb, stream_name, account_id),
        )
