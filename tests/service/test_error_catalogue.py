"""Every error text the Kinesis family's services and the front doors raise is written down
once (issue 14, item 6): Kinesis Data Streams' and the doors' in `broker/error_messages.py`,
Firehose's in `broker/firehose/messages.py`, Kinesis Data Analytics' in
`broker/analytics/messages.py`, Kinesis Video Streams' in `broker/video/messages.py`. A
`ShoalError` (or the `_refuse` and `_invalid` helpers) built with a literal, an f-string or a
literal joined to a value anywhere in these modules fails this test, naming the place; so does
one of the pure rules' own errors whose text an answer carries (the analytics parsers', the
MKV and signaling parsers'). The doors (`gateway/`) include the SigV4 and gRPC signature texts
and the IAM service's checks."""

from __future__ import annotations

import ast
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"

# Kinesis Data Streams and Firehose: both doors' operations, their pure rules, their metadata
# transitions (streams, consumers, reshards, limits, queues, nodes) and the channels.
CATALOGUED_MODULES = (
    "service",
    "streams",
    "queues",
    "firehose",
    "meta/capacity.py",
    "meta/transitions/account_limits.py",
    "meta/transitions/common.py",
    "meta/transitions/nodes.py",
    "meta/transitions/queues.py",
    "meta/transitions/reshards.py",
    "meta/transitions/stream_consumers.py",
    "meta/transitions/stream_features.py",
    "meta/transitions/stream_lifecycle.py",
    "meta/transitions/stream_settings.py",
    "gateway",
    "wire",
    # Kinesis Data Analytics (both APIs, the SQL engine and the runner) and Kinesis Video
    # Streams: their texts are in broker/analytics/messages.py and broker/video/messages.py.
    "analytics",
    "meta/transitions/analytics_applications.py",
    "video",
    "meta/transitions/video_streams.py",
    "meta/transitions/signaling_channels.py",
    "console/video_pages.py",
)
# The message's position in each error constructor the modules use: ShoalError and the doors'
# helpers, and the pure rules' own errors whose text an answer carries (a CodeValidation
# detail, UnableToDetectSchema, a PutMedia acknowledgement's Message, a signaling status).
_MESSAGE_ARGUMENT = {
    "ShoalError": 1,
    "_refuse": 1,
    "_invalid": 0,
    "AnomalyError": 0,
    "LogParseError": 0,
    "RecordError": 0,
    "ReferenceDataError": 0,
    "EbmlError": 0,
    "MkvError": 1,
    "SignalingMessageError": 0,
}


def _sources() -> list[Path]:
    found: list[Path] = []
    for entry in CATALOGUED_MODULES:
        path = BROKER / entry
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


def literal_error_texts(path: Path, root: Path = BROKER.parent) -> list[str]:
    """`file:line: text` for each ShoalError(code, <text>) (or `_refuse(code, <text>)`,
    `_invalid(<text>)`) in `path`, where <text> is a literal, an f-string or a `+` with one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else None
        if isinstance(function, ast.Name):
            name = function.id
        position = _MESSAGE_ARGUMENT.get(name or "")
        if position is None or len(node.args) <= position:
            continue
        message = node.args[position]
        if _is_text(message):
            where = path.relative_to(root)
            found.append(f"{where}:{node.lineno}: {ast.unparse(message)[:80]}")
    return found


def _is_text(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))


def test_every_raised_error_text_is_in_a_catalogue() -> None:
    sources = _sources()
    assert len(sources) > 30, sources  # the scope is real
    outside = [text for path in sources for text in literal_error_texts(path)]
    assert outside == [], "error texts outside the catalogues:\n" + "\n".join(outside)


def test_the_check_sees_a_literal_text(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        'raise ShoalError(ErrorCode.INVALID_ARGUMENT, f"Bad {thing}.")\n'
        "raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.INVALID_NEXT_TOKEN)\n"
        'raise _refuse(ErrorCode.ACCESS_DENIED, "Only nodes may call " + method)\n'
        'raise _invalid("name must be short.")\n'
        "raise _invalid(error_messages.IAM_NAME_INVALID)\n"
        'raise MkvError(AckErrorId.INVALID_MKV_DATA, "a truncated block")\n'
    )
    assert literal_error_texts(planted, tmp_path) == [
        "planted.py:1: f'Bad {thing}.'",
        "planted.py:3: 'Only nodes may call ' + method",
        "planted.py:4: 'name must be short.'",
        "planted.py:6: 'a truncated block'",
    ]
