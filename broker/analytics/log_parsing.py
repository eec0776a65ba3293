"""KDA's log-parsing functions as DuckDB expressions (SQL text), for `sql.py` to splice in.

Each function of the KDA SQL Reference returns a row whose fields a query reads by name
(`T.REC.COLUMN1`); here it is a DuckDB STRUCT with the same field names:

- `REGEX_LOG_PARSE(text, pattern)`: the pattern's groups, left to right, as COLUMN1..COLUMNn
  (VARCHAR); NULL when the pattern does not match the whole text (Java's `Matcher.matches`).
  DuckDB's regular expressions are RE2's: Java's backreferences and lookarounds are refused
  by the engine's dry run at CreateApplication, not run differently.
- `VARIABLE_COLUMN_LOG_PARSE(text, columns, delimiter)`: the text split at every delimiter
  (a character or a string); `columns` is a count (fields COLUMN1..COLUMNn, VARCHAR) or a list
  `'NAME TYPE type [NOT NULL], ...'` (each field cast to its type, NULL when it does not
  convert). Missing fields are NULL, extra ones are ignored.
- `FIXED_COLUMN_LOG_PARSE(text, 'NAME TYPE type [NOT NULL] START n [FOR m], ...')`: each
  field the characters from position n (0 is the first) for m characters (to the end without
  FOR), cast to its type (surrounding blanks trimmed for non-character types).

- `W3C_LOG_PARSE(text, format)`: a predefined format (COMMON, COMMON WITH VHOST, NCSA
  EXTENDED, REFERER, AGENT, IIS) or an Apache format string; one field COLUMNn per specifier.
- `SYS_LOG_PARSE(text)`: COLUMN1 the syslog timestamp (TIMESTAMP), COLUMN2 the rest.
- `FAST_REGEX_LOG_PARSER(text, pattern)`: a Fast Regex pattern's groups, matched lazily.

Pure text in, text out; a specification Shoal cannot run raises `LogParseError`, which
`sql.py` turns into CodeValidationException naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

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


def variable_column_log_parse(text: str, fields: int | list[Field], delimiter: str) -> str:
    if not delimiter:
        raise LogParseError(messages.LOG_EMPTY_DELIMITER)
    if isinstance(fields, int):
        if fields < 1:
            raise LogParseError(messages.log_column_count(count=fields))
        fields = [Field(f"COLUMN{index}", PARSED_TEXT_TYPE) for index in range(1, fields + 1)]
    parts = f"string_split({text}, {literal(delimiter)})"
    values = [
        (field.name, _cast(f"{parts}[{index}]", field.sql_type))
        for index, field in enumerate(fields, start=1)
    ]
    return f"CASE WHEN {text} IS NOT NULL THEN {_struct(values)} END"


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


def fast_regex_log_parse(text: str, pattern: str) -> str:
    """FAST_REGEX_LOG_PARSER(text, pattern): the pattern's groups as COLUMN1..n (VARCHAR) when
    the whole text matches, with lazy quantifiers (the shortest text at each step); NULL
    otherwise. The Fast Regex syntax (`@` any string, `"..."` a literal string, classes,
    `|`, `?*+{n,m}`) becomes RE2's; its intersection (&), complement (~), empty language (#),
    named patterns and numeric intervals (<...>) are refused."""
    translated = _fast_regex(pattern)
    groups = group_count(translated)
    if groups == 0:
        raise LogParseError(messages.log_pattern_without_group(pattern=pattern))
    return _typed_groups(text, f"^(?:{translated})$", [PARSED_TEXT_TYPE] * groups)


def _fast_regex(pattern: str) -> str:
    result: list[str] = []
    index = 0
    in_class = False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            result.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
            result.append(char)
        elif char == "[":
            in_class = True
            result.append(char)
        elif char == '"':
            end = pattern.find('"', index + 1)
            if end < 0:
                raise LogParseError(messages.log_unclosed_string(pattern=pattern))
            result.append(f"(?:{re.escape(pattern[index + 1 : end])})")
            index = end
        elif char == "@":
            result.append(".*?")
        elif char in "&~#<":
            raise LogParseError(messages.fast_regex_construct_not_run(char=char, pattern=pattern))
        elif char in "*+?":
            result.append(char + "?")  # lazy: the shortest text at each step
        elif char == "}":
            result.append("}?")
        else:
            result.append(char)
        index += 1
    return "".join(result)
