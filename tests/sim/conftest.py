"""Options of the simulation tier: `--seeds N` widens the batch, `--seed S` replays one run,
`--sim-steps K` lengthens each run's fault phase. The suite runs a short batch (10 seeds of
3,000 fault-phase events); the long run is `scripts/sim --seeds 10000`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker import buggify

DEFAULT_SEEDS = 10
DEFAULT_STEPS = 3_000


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "deterministic simulation")
    group.addoption("--seeds", type=int, default=DEFAULT_SEEDS, help="how many seeds to run")
    group.addoption("--seed", type=int, default=None, help="replay exactly this seed")
    group.addoption(
        "--sim-steps", type=int, default=DEFAULT_STEPS, help="events in each run's fault phase"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        seed = metafunc.config.getoption("--seed")
        seeds = [seed] if seed is not None else list(range(metafunc.config.getoption("--seeds")))
        metafunc.parametrize("sim_seed", seeds)


@pytest.fixture
def sim_steps(request: pytest.FixtureRequest) -> int:
    steps: int = request.config.getoption("--sim-steps")
    return steps


@pytest.fixture(autouse=True)
def _fault_points_off() -> Iterator[None]:
    """A test that builds a SimCluster without finishing a run leaves no fault point on."""
    yield
    buggify.disable()
