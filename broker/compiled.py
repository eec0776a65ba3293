"""The optional C modules (setup.py builds them at install when a C compiler is there): each
speeds up one pure-Python hot loop that stays as its fallback, with the same results.

A compiled module carries the SHA-256 of the C source it was built from. Where that source
sits next to it (a source tree: an editable install not rebuilt after an edit), a module built
from another version is not used, and the Python code runs instead (with a warning).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from types import ModuleType

_log = logging.getLogger(__name__)


def load(name: str) -> ModuleType | None:
    """The compiled module `name` (e.g. "broker.log._record_walk"), or None when it was not
    built or was built from another version of its source."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    source = Path(module.__file__ or "").with_name(name.rsplit(".", 1)[-1] + ".c")
    if source.exists():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != module.SOURCE_SHA256:
            _log.warning(
                "%s was built from another version of %s; using the Python code instead "
                "(run scripts/install to rebuild it)",
                module.__file__,
                source.name,
            )
            return None
    return module
