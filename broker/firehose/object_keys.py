"""S3 object keys as Firehose writes them.

Pure: times, names and the random part are passed in. AWS's layout:

    <prefix>YYYY/MM/DD/HH/<DeliveryStreamName>-<DeliveryStreamVersion>-YYYY-MM-DD-HH-MM-SS-<random>[.ext]

The time is the approximate arrival of the first record in the object, in UTC unless the
destination sets CustomTimeZone. A prefix with `!{...}` expressions is evaluated instead of
getting the default `YYYY/MM/DD/HH/` appended: `!{timestamp:<java DateTimeFormatter pattern>}`,
`!{firehose:random-string}`, `!{firehose:error-output-type}` and, with dynamic partitioning,
`!{partitionKeyFromQuery:<name>}` and `!{partitionKeyFromLambda:<name>}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo

EXPRESSION = re.compile(r"!\{([A-Za-z]+):([^}]*)\}")
_JAVA_FIELDS = {
    "yyyy": "%Y",
    "yy": "%y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "ss": "%S",
}
_JAVA_TOKEN = re.compile(r"'[^']*'|([A-Za-z])\1*|[^A-Za-z']+")
EXTENSIONS = {
    "UNCOMPRESSED": "",
    "GZIP": ".gz",
    "ZIP": ".zip",
    "Snappy": ".snappy",
    "HADOOP_SNAPPY": ".hsnappy",
    "ZSTD": ".zst",  # Kinesis channels only (Firehose itself has no ZSTD)
}


class PrefixError(ValueError):
    """A prefix expression Firehose would refuse (the message says which)."""


def java_time_format(pattern: str, moment: datetime) -> str:
    """`moment` formatted with a java.time DateTimeFormatter pattern (the fields Firehose's
    documentation uses: yyyy, yy, MM, dd, HH, mm, ss, and 'quoted literals')."""
    out: list[str] = []
    position = 0
    while position < len(pattern):
        match = _JAVA_TOKEN.match(pattern, position)
        assert match is not None
        token = match.group(0)
        position = match.end()
        if token.startswith("'"):
            out.append(token[1:-1] if token != "''" else "'")
        elif token[0].isalpha():
            field = _JAVA_FIELDS.get(token)
            if field is None:
                raise PrefixError(f"The timestamp pattern {pattern!r} uses an unsupported field.")
            out.append(moment.strftime(field))
        else:
            out.append(token)
    return "".join(out)


PARTITION_NAMESPACES = ("partitionKeyFromQuery", "partitionKeyFromLambda")


def check_prefix(prefix: str, *, dynamic_partitioning: bool = False) -> None:
    """Raises PrefixError for an expression this prefix cannot evaluate."""
    for namespace, argument in EXPRESSION.findall(prefix):
        if namespace == "timestamp":
            java_time_format(argument, datetime(2000, 1, 1))
        elif namespace == "firehose":
            if argument not in ("random-string", "error-output-type"):
                raise PrefixError(f"Unknown firehose expression !{{firehose:{argument}}}.")
        elif namespace in PARTITION_NAMESPACES:
            if not dynamic_partitioning:
                raise PrefixError(
                    f"The expression namespace {namespace!r} needs dynamic partitioning, "
                    "which this delivery stream does not enable."
                )
        else:
            raise PrefixError(f"Unknown expression namespace {namespace!r}.")


def partition_key_names(prefix: str) -> dict[str, set[str]]:
    """The partition keys a prefix uses, by namespace."""
    names: dict[str, set[str]] = {namespace: set() for namespace in PARTITION_NAMESPACES}
    for namespace, argument in EXPRESSION.findall(prefix):
        if namespace in names:
            names[namespace].add(argument)
    return names


def expand_prefix(
    prefix: str,
    moment: datetime,
    *,
    random_string: Callable[[], str],
    error_output_type: str | None = None,
    partition_keys: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The prefix for an object whose records arrived at `moment` (already in the right zone)
    and share `partition_keys` (by namespace). A prefix without expressions gets AWS's default
    `YYYY/MM/DD/HH/` appended."""
    has_expression = False

    def evaluate(match: re.Match[str]) -> str:
        nonlocal has_expression
        has_expression = True
        namespace, argument = match.group(1), match.group(2)
        if namespace == "timestamp":
            return java_time_format(argument, moment)
        if namespace in PARTITION_NAMESPACES:
            value = (partition_keys or {}).get(namespace, {}).get(argument)
            assert value is not None, f"no {namespace} key {argument}"
            return value
        if argument == "random-string":
            return random_string()
        assert argument == "error-output-type", argument
        assert error_output_type is not None, "only error prefixes name the error type"
        return error_output_type

    expanded = EXPRESSION.sub(evaluate, prefix)
    if has_expression:
        return expanded
    return expanded + moment.strftime("%Y/%m/%d/%H/")


def object_name(
    delivery_stream_name: str, version_id: int, moment: datetime, *, random_part: str
) -> str:
    """`<DeliveryStreamName>-<DeliveryStreamVersion>-YYYY-MM-DD-HH-MM-SS-<random>`."""
    stamp = moment.strftime("%Y-%m-%d-%H-%M-%S")
    return f"{delivery_stream_name}-{version_id}-{stamp}-{random_part}"


def object_key(
    *,
    prefix: str,
    delivery_stream_name: str,
    version_id: int,
    moment: datetime,
    random_part: str,
    extension: str,
    error_output_type: str | None = None,
    partition_keys: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    return expand_prefix(
        prefix,
        moment,
        random_string=lambda: random_part[:11],
        error_output_type=error_output_type,
        partition_keys=partition_keys,
    ) + (object_name(delivery_stream_name, version_id, moment, random_part=random_part) + extension)


def zone_of(
    custom_time_zone: str | None, resolve: Callable[[str], tzinfo]
) -> Callable[[datetime], datetime]:
    """A converter of UTC moments into the destination's CustomTimeZone (UTC when unset)."""
    if not custom_time_zone or custom_time_zone == "UTC":
        return lambda moment: moment
    zone = resolve(custom_time_zone)
    return lambda moment: moment.astimezone(zone)
