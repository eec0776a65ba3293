"""Tests of broker.meta: commands, state machine, codecs, quorum adapters."""
