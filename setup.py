"""The optional C writer of GetRecords' gRPC page (broker/gateway/_record_fields.c); the rest
of the build is in pyproject.toml.

Without a C compiler the build goes on without it (`optional=True`) and
broker/gateway/record_fields.py writes the pages in Python: the same bytes, slower. The
module carries its source's SHA-256, so a build of another version of the source is not used.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "broker/gateway/_record_fields.c"
digest = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "broker.gateway._record_fields",
            [SOURCE],
            define_macros=[("SOURCE_SHA256", f'"{digest}"')],
            optional=True,
        )
    ]
)
