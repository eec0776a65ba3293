"""KDA's log-parsing functions as DuckDB expressions (SQL text), for `sql.py` to splice in.

Each function of the KDA SQL Reference returns a row whose fields a query reads by name
(`T.REC.COLUMN1`); here it is a DuckDB STRUCT with the same field names:

- `REGEX_LOG_PARSE(text, pattern)`: the pattern's groups, left to right, as COLUMN1..COLUMNn
  (VARCHAR); NULL when the pattern does not match the whole text (Java's `Matcher.matches`).
  DuckDB's regular expressions are RE2's: Java's backreferences and lookarounds are refused
  by the engine's dry run at CreateApplication, not run differently.
- `VARIABLE_COLUMN_LOG_PARSE(text, columns, delimiter [, escape, quote])`: the text split at
  every delimiter (a character or a string); `columns` is a count (fields COLUMN1..COLUMNn,
  VARCHAR) or a list `'NAME TYPE type [NOT NULL], ...'` (each field cast to its type, NULL
  when it does not convert). Missing fields are NULL, extra ones are ignored. With an escape
  or a quote string, a function the engine adds splits (`split_fields`): an escaped
  character or a quoted run keeps a delimiter inside its field.
- `FIXED_COLUMN_LOG_PARSE(text, 'NAME TYPE type [NOT NULL] START n [FOR m], ...')`: each
  field the characters from position n (0 is the first) for m characters (to the end without
  FOR), cast to its type (surrounding blanks trimmed for non-character types).

- `W3C_LOG_PARSE(text, format)`: a predefined format (COMMON, COMMON WITH VHOST, NCSA
  EXTENDED, REFERER, AGENT, IIS) or an Apache format string; one field COLUMNn per specifier.
- `SYS_LOG_PARSE(text)`: COLUMN1 the syslog timestamp (TIMESTAMP), COLUMN2 the rest.
- `FAST_REGEX_LOG_PARSER(text, pattern)`: a Fast Regex pattern's groups, each expression
  matched lazily and never backtracked into (KDA's evaluation; a function the engine adds).

Pure text in, text out; a specification Shoal cannot run raises `LogParseError`, which
`sql.py` turns into CodeValidationException naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import regex

from broker.analytics import messages

# KDA: "The columns will be of type varchar(1024)".
PARSED_TEXT_TYPE = "VARCHAR"


class LogParseError(ValueError):
    """The function's arguments are not a specification Shoal can run (the message says why)."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    sql_type: str  # the engine's type
    start: int | None = None  # FIXED_COLUMN_LOG_PARSE: 0-based position
    length: int | None = None  # FIXED_COLUMN_LOG_PARSE: FOR m (None: to the end)


def literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _struct(fields: list[tuple[str, str]]) -> str:
    return "struct_pack(" + ", ".join(f"{_identifier(n)} := {v}" for n, v in fields) + ")"


def group_count(pattern: str) -> int:
    """The capturing groups of a Java regular expression (its named groups `(?<name>...)`
    counted as Python spells them)."""
    python = re.sub(r"\(\?<(?![=!])", "(?P<", pattern)
    try:
        return re.compile(python).groups
    except re.error as error:
        message = f"the pattern {pattern!r} is not a regular expression: {error}"
        raise LogParseError(message) from error


def regex_log_parse(text: str, pattern: str) -> str:
    groups = group_count(pattern)
    if groups == 0:
        raise LogParseError(messages.log_pattern_without_group(pattern=pattern))
    anchored = literal(f"^(?:{pattern})$")
    names = ", ".join(literal(f"COLUMN{index}") for index in range(1, groups + 1))
    return (
        f"CASE WHEN regexp_matches({text}, {anchored}) "
        f"THEN regexp_extract({text}, {anchored}, [{names}]) END"
    )


def _split_columns(spec: str) -> list[str]:
    """The comma-separated column descriptions of `spec` (commas inside parentheses, as in
    DECIMAL(10, 2), do not separate)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in spec:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += (char == "(") - (char == ")")
        current.append(char)
    parts.append("".join(current).strip())
    if any(not part for part in parts):
        raise LogParseError(messages.log_empty_column_description(spec=spec))
    return parts


_COLUMN = re.compile(
    r'^(?P<name>"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)\s+TYPE\s+(?P<type>.+?)'
    r"(?:\s+NOT\s+NULL)?"
    r"(?:\s+START\s+(?P<start>\d+)(?:\s+FOR\s+(?P<length>\d+))?)?$",
    re.IGNORECASE | re.DOTALL,
)


def columns(spec: str, engine_type: Callable[[str], str], *, fixed: bool) -> list[Field]:
    """The fields of a column description list (`engine_type` turns a SQL type into the
    engine's, raising ValueError for one it does not know)."""
    fields: list[Field] = []
    for description in _split_columns(spec):
        match = _COLUMN.match(description)
        if match is None:
            expected = "NAME TYPE type [NOT NULL]" + (" START n [FOR m]" if fixed else "")
            raise LogParseError(
                messages.log_column_description_invalid(description=description, expected=expected)
            )
        if "'" in match["type"]:
            raise LogParseError(messages.log_format_string_not_run(description=description))
        if fixed != (match["start"] is not None):
            raise LogParseError(
                f"START in {description!r}" if not fixed else f"no START in {description!r}"
            )
        name = match["name"]
        name = name[1:-1] if name.startswith('"') else name.upper()
        try:
            sql_type = engine_type(match["type"].strip())
        except ValueError as error:
            raise LogParseError(messages.log_column_type(name=name, error=error)) from error
        fields.append(
            Field(
                name=name,
                sql_type=sql_type,
                start=int(match["start"]) if match["start"] is not None else None,
                length=int(match["length"]) if match["length"] is not None else None,
            )
        )
    return fields


def _cast(value: str, sql_type: str) -> str:
    if sql_type.startswith("VARCHAR") or sql_type == PARSED_TEXT_TYPE:
        return value
    return f"TRY_CAST(trim({value}) AS {sql_type})"


def variable_column_log_parse(
    text: str,
    fields: int | list[Field],
    delimiter: str,
    escape: str = "",
    quote: str = "",
) -> str:
    if not delimiter:
        raise LogParseError(messages.LOG_EMPTY_DELIMITER)
    if len(quote) > 2:
        raise LogParseError(messages.log_quote_string(quote=quote))
    if isinstance(fields, int):
        if fields < 1:
            raise LogParseError(messages.log_column_count(count=fields))
        fields = [Field(f"COLUMN{index}", PARSED_TEXT_TYPE) for index in range(1, fields + 1)]
    if escape or quote:
        arguments = ", ".join(literal(a) for a in (delimiter, escape, quote))
        parts = f"{SPLIT_FUNCTION}({text}, {arguments})"
    else:
        parts = f"string_split({text}, {literal(delimiter)})"
    values = [
        (field.name, _cast(f"{parts}[{index}]", field.sql_type))
        for index, field in enumerate(fields, start=1)
    ]
    return f"CASE WHEN {text} IS NOT NULL THEN {_struct(values)} END"


SPLIT_FUNCTION = "shoal_split_fields"


def split_fields(text: str | None, delimiter: str, escape: str, quote: str) -> list[str] | None:
    """The engine's `SPLIT_FUNCTION`: VARIABLE_COLUMN_LOG_PARSE's split with an escape string
    (the character after it is taken as is, so `a\\,b` is the one field `a,b`) and a quote
    string (its first character begins a quoted run, its second, or the first again, ends it;
    a delimiter inside the run is text). The escape and quote characters are not kept."""
    if text is None:
        return None
    begin = quote[:1]
    end = quote[1:2] or begin
    fields: list[str] = []
    field: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        if escape and text.startswith(escape, index) and index + len(escape) < len(text):
            index += len(escape)
            field.append(text[index])
            index += 1
        elif quoted and text[index] == end:
            quoted = False
            index += 1
        elif not quoted and begin and text[index] == begin:
            quoted = True
            index += 1
        elif not quoted and text.startswith(delimiter, index):
            fields.append("".join(field))
            field = []
            index += len(delimiter)
        else:
            field.append(text[index])
            index += 1
    fields.append("".join(field))
    return fields


def fixed_column_log_parse(text: str, fields: list[Field]) -> str:
    values = []
    for field in fields:
        assert field.start is not None
        if field.length is None:
            part = f"substring({text}, {field.start + 1})"
        else:
            part = f"substring({text}, {field.start + 1}, {field.length})"
        values.append((field.name, _cast(part, field.sql_type)))
    return f"CASE WHEN {text} IS NOT NULL THEN {_struct(values)} END"


# --- W3C_LOG_PARSE ----------------------------------------------------------------------------

# The reference's predefined formats, by name.
W3C_FORMATS = {
    "COMMON": '%h %l %u %t "%r" %>s %b',
    "COMMON WITH VHOST": '%v %h %l %u %t "%r" %>s %b',
    "NCSA EXTENDED": '%h %l %u %t "%r" %>s %b "%[Referer]i" "%[User-agent]i"',
    "REFERER": "%[Referer]i ---> %U",
    "AGENT": "%[User-agent]i",
}
# IIS's log format: 15 comma-separated fields.
IIS_FIELDS = 15
# The specifiers whose values are numbers, as the reference types them (%b numeric, %B text).
_W3C_TYPES = {
    "b": "BIGINT",
    "s": "INTEGER",
    "D": "BIGINT",
    "T": "BIGINT",
    "p": "INTEGER",
    "P": "INTEGER",
    "I": "BIGINT",
    "O": "BIGINT",
}
# One Apache format specifier: % [conditions] [<>] [{name} or [name]] letter.
_W3C_SPECIFIER = re.compile(r"%(!?[0-9,]*)([<>]?)(\{[^}]*\}|\[[^\]]*\])?([a-zA-Z%])")


def _w3c_fields(format_string: str) -> tuple[str, list[str]]:
    """The RE2 pattern of an Apache log format (one group per specifier) and each group's
    engine type."""
    if format_string.upper() == "IIS":
        group = "([^,]*)"
        return ", ?".join([group] * IIS_FIELDS), [PARSED_TEXT_TYPE] * IIS_FIELDS
    spec = W3C_FORMATS.get(" ".join(format_string.upper().split()), format_string)
    pattern: list[str] = []
    types: list[str] = []
    position = 0
    for match in _W3C_SPECIFIER.finditer(spec):
        pattern.append(_w3c_literal(spec[position : match.start()]))
        position = match.end()
        letter = match[4]
        if letter == "%":
            pattern.append("%")
            continue
        quoted = match.start() > 0 and spec[match.start() - 1] == '"'
        whole = match.start() == 0 and match.end() == len(spec)  # AGENT: the line is the value
        if letter == "t" and match[3] is None:
            pattern.append(r"(\[[^\]]*\])")
        elif quoted:
            pattern.append(r'((?:[^"\\]|\\.)*)')
        elif whole:
            pattern.append("(.*)")
        else:
            pattern.append(r"(\S+)")
        types.append(_W3C_TYPES.get(letter, PARSED_TEXT_TYPE))
    pattern.append(_w3c_literal(spec[position:]))
    if not types:
        raise LogParseError(messages.log_format_without_specifier(format_string=format_string))
    return "".join(pattern), types


def _w3c_literal(text: str) -> str:
    """A format's literal text as a pattern: blanks match any run of blanks."""
    return r"\s+".join(re.escape(part) for part in re.split(r"\s+", text))


def w3c_log_parse(text: str, format_string: str) -> str:
    """W3C_LOG_PARSE(text, format): COLUMN1..n, one per specifier (numbers for the numeric
    specifiers, text otherwise); NULL when the line does not have the format."""
    pattern, types = _w3c_fields(format_string)
    return _typed_groups(text, f"^{pattern}\\s*$", types)


def _typed_groups(text: str, pattern: str, types: list[str]) -> str:
    anchored = literal(pattern)
    values = [
        (f"COLUMN{index}", _cast(f"regexp_extract({text}, {anchored}, {index})", sql_type))
        for index, sql_type in enumerate(types, start=1)
    ]
    return f"CASE WHEN regexp_matches({text}, {anchored}) THEN {_struct(values)} END"


# --- SYS_LOG_PARSE ----------------------------------------------------------------------------

# RFC 3164's timestamp (`Mmm dd hh:mm:ss`, the day space-padded), then the rest of the line.
_SYSLOG = r"^([A-Z][a-z]{2}) +([0-9]{1,2}) ([0-9]{2}:[0-9]{2}:[0-9]{2}) +(.*?)\s*$"


def sys_log_parse(text: str) -> str:
    """SYS_LOG_PARSE(text): COLUMN1 the timestamp (a TIMESTAMP; the format has no year: the
    current one, as syslog receivers read it), COLUMN2 the rest (host and message)."""
    pattern = literal(_SYSLOG)

    def group(index: int) -> str:
        return f"regexp_extract({text}, {pattern}, {index})"

    stamp = (
        f"try_strptime(CAST(year(current_date) AS VARCHAR) || ' ' || {group(1)} || ' ' || "
        f"{group(2)} || ' ' || {group(3)}, '%Y %b %d %H:%M:%S')"
    )
    values = [("COLUMN1", stamp), ("COLUMN2", group(4))]
    return f"CASE WHEN regexp_matches({text}, {pattern}) THEN {_struct(values)} END"


# --- FAST_REGEX_LOG_PARSER --------------------------------------------------------------------


# The DuckDB function (registered by the engine) that runs a translated Fast Regex over a
# text: its groups (VARCHAR[]), or NULL when the text does not match.
FAST_REGEX_FUNCTION = "shoal_fast_regex"


def fast_regex_log_parse(text: str, pattern: str) -> str:
    """FAST_REGEX_LOG_PARSER(text, pattern): the pattern's groups as COLUMN1..n (VARCHAR) when
    the whole text is accounted for, NULL otherwise, evaluated as KDA's reference describes:
    the pattern is cut into expressions (each top-level group, and each run between groups),
    a fixed-length start of an expression moves to the end of the previous one (a wholly
    fixed-length expression merges with it), and the expressions match in turn, each lazily
    (the shortest text followed by that fixed-length part) and with no backtracking: once an
    expression has matched, it is never reconsidered (`fast_regex`). The Fast Regex syntax:
    `@` any string, `"..."` a literal string, classes, `.`, `|`, `?*+{n}{n,}{n,m}`; its
    intersection (&), complement (~), empty language (#), named patterns and numeric intervals
    (<...>) are refused."""
    translated = fast_regex(pattern)
    try:
        groups = regex.compile(translated).groups
    except regex.error as error:
        raise LogParseError(messages.fast_regex_invalid(pattern=pattern, error=error)) from error
    if groups == 0:
        raise LogParseError(messages.log_pattern_without_group(pattern=pattern))
    call = f"{FAST_REGEX_FUNCTION}({text}, {literal(translated)})"
    values = [(f"COLUMN{index}", f"{call}[{index}]") for index in range(1, groups + 1)]
    return f"CASE WHEN {call} IS NOT NULL THEN {_struct(values)} END"


def fast_regex_groups(text: str | None, translated: str) -> list[str | None] | None:
    """The engine's `FAST_REGEX_FUNCTION`: the groups of `translated` (from `fast_regex`) when
    it accounts for all of `text`, else None."""
    if text is None:
        return None
    match = _compiled(translated).fullmatch(text)
    return list(match.groups()) if match is not None else None


_COMPILED: dict[str, regex.Pattern[str]] = {}


def _compiled(translated: str) -> regex.Pattern[str]:
    found = _COMPILED.get(translated)
    if found is None:
        if len(_COMPILED) >= 256:  # the patterns of the applications running here
            _COMPILED.clear()
        found = _COMPILED[translated] = regex.compile(translated, regex.DOTALL)
    return found


@dataclass(frozen=True, slots=True)
class _Item:
    """One top-level piece of a Fast Regex: its `regex` text, the same without capturing
    groups (for lookaheads), its length when fixed (None: variable), and for a group its own
    items (None otherwise; empty for a group holding a union)."""

    text: str
    plain: str
    length: int | None
    inner: tuple[_Item, ...] | None = None


def _simple(text: str, length: int | None) -> _Item:
    return _Item(text, text, length)


def fast_regex(pattern: str) -> str:
    """A Fast Regex as a `regex`-module pattern with KDA's evaluation (`fast_regex_log_parse`):
    each expression an atomic group `(?>...)` (never backtracked into) whose lazy quantifiers
    stop at the first place where the fixed-length text after it follows (a lookahead)."""
    items, alternatives = _fast_items(pattern, 0, pattern, top=True)[0:2]
    if alternatives:  # a union at the top: one expression
        return f"(?>(?:{''.join(i.text for i in items)})\\Z)"
    expressions: list[list[_Item]] = []
    for item in items:  # each group its own expression; the runs between them one each
        if item.inner is not None or not expressions or expressions[-1][-1].inner is not None:
            expressions.append([item])
        else:
            expressions[-1].append(item)
    parts = []
    for index, expression in enumerate(expressions):
        following = [i for later in expressions[index + 1 :] for i in later]
        look = _fixed_start(following)
        text = "".join(item.text for item in expression)
        parts.append(f"(?>{text}(?={look}))" if look else f"(?>{text})")
    return "".join(parts)


def _fixed_start(items: list[_Item]) -> str:
    """The fixed-length text the items start with (into a group's own start), with `\\Z` when
    that reaches the pattern's end."""
    fixed: list[str] = []
    for item in items:
        if item.length is not None:
            fixed.append(item.plain)
            continue
        if item.inner is not None:  # a group of variable length: its fixed-length start
            start = _fixed_start_of(list(item.inner))
            if start:
                fixed.append(f"(?:{start})")
        return "".join(fixed)
    return "".join(fixed) + "\\Z"


def _fixed_start_of(items: list[_Item]) -> str:
    fixed = []
    for item in items:
        if item.length is None:
            break
        fixed.append(item.plain)
    return "".join(fixed)


def _fast_items(
    pattern: str, index: int, whole: str, *, top: bool = False
) -> tuple[list[_Item], bool, int]:
    """The items from `index` to the end (top) or to the closing parenthesis; whether a union
    `|` was among them; the index after them."""
    items: list[_Item] = []
    alternatives = False
    while index < len(pattern):
        char = pattern[index]
        item: _Item | None = None
        if char == "\\" and index + 1 < len(pattern):
            item = _simple(regex.escape(pattern[index + 1]), 1)
            index += 2
        elif char == "[":
            end = index + 1
            if end < len(pattern) and pattern[end] == "^":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            if end >= len(pattern):
                raise LogParseError(messages.fast_regex_unclosed_class(pattern=whole))
            item = _simple(pattern[index : end + 1], 1)
            index = end + 1
        elif char == '"':
            end = pattern.find('"', index + 1)
            if end < 0:
                raise LogParseError(messages.log_unclosed_string(pattern=whole))
            content = pattern[index + 1 : end]
            item = _simple(f"(?:{regex.escape(content)})", len(content))
            index = end + 1
        elif char == "(":
            inner, inner_alternatives, index = _fast_items(pattern, index + 1, whole)
            text = "(" + "".join(i.text for i in inner) + ")"
            plain = "(?:" + "".join(i.plain for i in inner) + ")"
            if inner_alternatives:  # a union inside: variable, no fixed-length start known
                item = _Item(text, plain, None, inner=())
            else:
                item = _Item(text, plain, _total(inner), inner=tuple(inner))
        elif char == ")":
            if top:
                raise LogParseError(messages.fast_regex_unmatched_parenthesis(pattern=whole))
            return items, alternatives, index + 1
        elif char == "|":
            alternatives = True
            items.append(_simple("|", None))
            index += 1
            continue
        elif char == "@":
            item = _simple(".*?", None)
            index += 1
        elif char == ".":
            item = _simple(".", 1)
            index += 1
        elif char in "&~#<":
            raise LogParseError(messages.fast_regex_construct_not_run(char=char, pattern=whole))
        elif char in "*+?{":
            if not items:
                raise LogParseError(messages.fast_regex_quantifier_without_operand(pattern=whole))
            quantified = items.pop()
            if char == "{":
                end = pattern.find("}", index)
                if end < 0:
                    raise LogParseError(messages.fast_regex_unclosed_repetition(pattern=whole))
                bounds = pattern[index + 1 : end]
                exact = bounds.isdigit()
                length = (
                    quantified.length * int(bounds)
                    if exact and quantified.length is not None
                    else None
                )
                suffix = f"{{{bounds}}}?"
                items.append(
                    _Item(
                        f"(?:{quantified.text}){suffix}", f"(?:{quantified.plain}){suffix}", length
                    )
                )
                index = end + 1
            else:  # lazy: the shortest text at each step
                items.append(
                    _Item(f"(?:{quantified.text}){char}?", f"(?:{quantified.plain}){char}?", None)
                )
                index += 1
            continue
        else:
            item = _simple(regex.escape(char), 1)
            index += 1
        items.append(item)
    if not top:
        raise LogParseError(messages.fast_regex_unclosed_group(pattern=whole))
    return items, alternatives, index


def _total(items: list[_Item]) -> int | None:
    total = 0
    for item in items:
        if item.length is None:
            return None
        total += item.length
    return total
