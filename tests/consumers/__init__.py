"""Tests of broker/consumers: the lease table rules and the balancing planner."""
