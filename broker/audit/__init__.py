"""The audit trail (issue 15): who did what, when, from where, to what, and the outcome.

- `events.py`: one call as a CloudTrail event (pure).
- `trail.py`: the node's trail: events queued (bounded), written in batches to an internal
  stream (replicated and durable like any stream, hidden from the public doors), and read
  back for `shoal audit`.
"""
