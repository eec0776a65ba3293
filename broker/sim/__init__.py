"""Deterministic simulation of a replicated Shoal cluster (STYLE B.5).

One thread, one event heap, virtual time, all randomness from one seed split into named
streams. The real code (the replication driver's `DriverCore` with its `ShardReplica`s, the
controller's `ControllerCore`, the metadata `state_machine`) runs against simulated adapters:
`network.SimNetwork`, `disk.SimLogStore`, `control.SimController`. Nothing here
imports an I/O library or a real adapter (an import-linter contract holds that).

Entry points: `run.run_seed(seed, steps=...)` (used by `tests/sim` and `scripts/sim`).
"""
