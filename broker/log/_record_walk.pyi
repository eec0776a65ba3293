# The C walk of a stored batch's record lengths (_record_walk.c; broker/log/records.py).
SOURCE_SHA256: str

def skip(value: bytes, position: int, count: int, /) -> int: ...
def take(
    value: bytes,
    position: int,
    index: int,
    stop: int,
    room: int,
    taken_bytes: int,
    bytes_max: int,
    first_taken: bool,
    /,
) -> tuple[int, int, int, bool]: ...
def crc32c(crc: int, value: bytes, start: int, /) -> int | None: ...
