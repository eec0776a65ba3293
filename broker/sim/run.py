"""One simulated run of the replica cluster: the cluster with its workload, invariants and
fault plans (`new_cluster`), and `run_seed` (a fault phase, then the quiet phase and the final
checks). Used by `tests/sim` and `scripts/sim`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from broker import buggify
from broker.sim.cluster import SimCluster, SimConfig
from broker.sim.control import Trace
from broker.sim.controller import ControllerViolation
from broker.sim.faults import FaultPlans
from broker.sim.invariants import Invariants, InvariantViolation
from broker.sim.workloads import Workload
from broker.sim.world import World


def _observers(cluster: SimCluster) -> tuple[Workload, Invariants, FaultPlans]:
    workload = Workload(cluster)
    return workload, Invariants(cluster, workload), FaultPlans(cluster)


def new_cluster(seed: int, config: SimConfig | None = None) -> SimCluster:
    """A cluster for `seed` with its workload, invariants and fault plans (this enables the
    fault points of broker.buggify; `run_seed` disables them at the end)."""
    return SimCluster(seed, config, observers=_observers)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    seed: int
    steps: int
    virtual_ms: int
    violation: str | None
    summary: str

    @property
    def ok(self) -> bool:
        return self.violation is None


QUIET_PRODUCE_MS = 1_000  # producers keep writing this long into the quiet phase


def run_seed(
    seed: int,
    *,
    steps: int = 3_000,
    quiet_ms_max: int = 30_000,
    reshards: bool = True,
    trace: Trace | None = None,
) -> SimResult:
    """One simulated run: `steps` events with faults, then the quiet phase and final checks.
    `reshards=False` runs the seed without the reshards its config may draw (the run it had
    before reshards were simulated: tests chose seeds on those). `trace` is told the
    controller's decisions, Prepares, promises and images and the nodes' crashes, disk losses
    and restarts as they happen (`scripts/sim --trace-shard`)."""
    config = SimConfig.randomized(World(seed).random("config"))
    if not reshards:
        config = dataclasses.replace(config, reshards=False)
    cluster = new_cluster(seed, config)  # enables the fault points (broker.buggify)
    cluster.controller.trace = trace
    try:
        while cluster.world.steps < steps and cluster.step():
            pass
        cluster.heal()
        cluster.workload.stop_at(cluster.world.now_ms + QUIET_PRODUCE_MS)
        deadline = cluster.world.now_ms + quiet_ms_max
        while cluster.world.now_ms < deadline:
            if not cluster.step():
                break
            if cluster.world.now_ms > cluster.workload.stopped_at_ms and cluster.converged():
                break
        cluster.invariants.final_check()
    except (InvariantViolation, ControllerViolation) as violation:
        return SimResult(
            seed=seed,
            steps=cluster.world.steps,
            virtual_ms=cluster.world.now_ms,
            violation=str(violation),
            summary=cluster.summary(),
        )
    except AssertionError as error:
        return SimResult(
            seed=seed,
            steps=cluster.world.steps,
            virtual_ms=cluster.world.now_ms,
            violation=f"AssertionError (a core assertion): {error!r}",
            summary=cluster.summary(),
        )
    finally:
        buggify.disable()  # never left on for whatever runs next in this process
    return SimResult(
        seed=seed,
        steps=cluster.world.steps,
        virtual_ms=cluster.world.now_ms,
        violation=None,
        summary=cluster.summary(),
    )
