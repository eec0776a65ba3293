"""`python -m benchmarks`: the `scripts/bench` run (see benchmarks/bench.py).

An entry module of its own, so that `benchmarks.bench` is imported once under its real name
(not as `__main__`) and `benchmarks.aws_http`, which imports it, shares its classes.
"""

from __future__ import annotations

import sys

from benchmarks.bench import main

if __name__ == "__main__":
    sys.exit(main())
