"""Chaos tests with real node processes (issue 4 point 8): a workload of uniquely identifiable
records (`workload.py`), a nemesis of kill -9 / SIGSTOP / restart faults (`nemesis.py`) and a
checker that reads every shard back through every node (`checker.py`). `scripts/chaos` runs a
long one; `test_chaos.py` a short one in the default suite."""
