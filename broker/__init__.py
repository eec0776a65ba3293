"""Shoal: a self-hosted, replicated, Kinesis-compatible stream broker.

This module holds the version and nothing else; see docs/ARCHITECTURE.md for the map.
"""

__version__ = "0.1.0"
