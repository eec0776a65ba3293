"""Every error text the Kinesis family's services and the front doors raise is written down
once (issue 14, item 6): Kinesis Data Streams' and the doors' in `broker/error_messages.py`,
Firehose's in `broker/firehose/messages.py`, Kinesis Data Analytics' in
`broker/analytics/messages.py`, Kinesis Video Streams' in `broker/video/messages.py`; the
node's own (the metadata quorum, replication, the lease table, the client, the command line,
the console) in `broker/error_messages.py` too. A `ShoalError` (or the `_refuse` and
`_invalid` helpers) built with a literal, an f-string or a literal joined to a value anywhere
in the `broker` package outside those four catalogues fails this test, naming the place,
whether the text is passed by position or as `message=`; so does one of the pure rules' own
errors whose text an answer carries (the analytics parsers', the MKV and signaling parsers',
the lease table's refusals, the metadata quorum's unavailability reasons)."""

from __future__ import annotations

import ast
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"

# The whole package: every module but the catalogues themselves (where the texts are written
# down), with no exception list.
CATALOGUES = (
    "error_messages.py",
    "firehose/messages.py",
    "analytics/messages.py",
    "video/messages.py",
)
# The message's position in each error constructor the modules use: ShoalError and the doors'
# helpers, and the pure rules' own errors whose text an answer carries (a CodeValidation
# detail, UnableToDetectSchema, a PutMedia acknowledgement's Message, a signaling status).
_MESSAGE_ARGUMENT: dict[str, int | None] = {
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
    # The lease table's refusals (consumers/leases.py) and the metadata quorum's reasons.
    "LeaseError": None,
    "_unavailable": 0,
}
_MESSAGE_KEYWORDS = frozenset({"message", "reason"})


def _sources() -> list[Path]:
    catalogues = {BROKER / entry for entry in CATALOGUES}
    return [path for path in sorted(BROKER.rglob("*.py")) if path not in catalogues]


def literal_error_texts(path: Path, root: Path = BROKER.parent) -> list[str]:
    """`file:line: text` for each ShoalError(code, <text>) (or `_refuse(code, <text>)`,
    `_invalid(<text>)`) in `path`, where <text> is a literal, an f-string or a `+` with one."""
    found: list[str] = []
    source = path.read_text()
    if not any(f"{name}(" in source for name in _MESSAGE_ARGUMENT):
        return found  # no error constructor in the file: nothing to parse
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else None
        if isinstance(function, ast.Name):
            name = function.id
        if name not in _MESSAGE_ARGUMENT:
            continue
        position = _MESSAGE_ARGUMENT[name]
        messages = [k.value for k in node.keywords if k.arg in _MESSAGE_KEYWORDS]
        if position is not None and len(node.args) > position:
            messages.append(node.args[position])
        for message in messages:
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
        'return LeaseError(refusal=LeaseRefusal.NOT_FOUND, message=f"no {application}")\n'
        'raise ShoalError(ErrorCode.UNAVAILABLE, message="stopping")\n'
    )
    assert literal_error_texts(planted, tmp_path) == [
        "planted.py:1: f'Bad {thing}.'",
        "planted.py:3: 'Only nodes may call ' + method",
        "planted.py:4: 'name must be short.'",
        "planted.py:6: 'a truncated block'",
        "planted.py:7: f'no {application}'",
        "planted.py:8: 'stopping'",
    ]
