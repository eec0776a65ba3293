"""The optional C modules (broker/compiled.py): GetRecords' gRPC page writer
(broker/wire/_record_fields.c), the walk of a stored batch's record lengths
(broker/log/_record_walk.c) and the reader of PutRecords' common entries from the request's
bytes (broker/wire/_put_entries.c). The rest of the build is in pyproject.toml.

Without a C compiler the build goes on without them (`optional=True`) and the Python code they
stand in for runs instead: the same results, slower. Each module carries its source's SHA-256,
so a build of another version of the source is not used.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCES = (
    "broker/wire/_record_fields.c",
    "broker/log/_record_walk.c",
    "broker/wire/_put_entries.c",
)


def extension(source: str) -> Extension:
    digest = hashlib.sha256((Path(__file__).parent / source).read_bytes()).hexdigest()
    return Extension(
        source.removesuffix(".c").replace("/", "."),
        [source],
        define_macros=[("SOURCE_SHA256", f'"{digest}"')],
        optional=True,
    )


setup(ext_modules=[extension(source) for source in SOURCES])
