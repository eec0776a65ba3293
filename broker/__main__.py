"""`python -m broker`: the `shoal` command (`broker/cli/`)."""

import sys

from broker.cli import main

if __name__ == "__main__":
    sys.exit(main())
