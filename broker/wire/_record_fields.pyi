# The C writer of GetRecords' gRPC page (_record_fields.c; broker/wire/record_fields.py).
from collections.abc import Sequence

SOURCE_SHA256: str

def write_page(
    runs: Sequence[tuple[object, ...]], tail: bytes, release_gil: bool = False, /
) -> bytes: ...
