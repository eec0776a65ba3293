"""The cluster's metadata format: which encodings of commands and snapshots the nodes agree on.

One integer for the whole cluster. A binary supports every format up to `METADATA_FORMAT_MAX`
and writes the one the cluster has activated, so nodes of two versions can share a cluster
during a rolling upgrade (docs/operations.md "Rolling upgrades"). Pure values; no I/O.
"""

from __future__ import annotations

# 1: commands in encoding 2 and images in encoding 4, as written since issue 6.
METADATA_FORMAT_MAX = 1
