"""LocalQuorum (the in-memory MetadataQuorum) and the MetadataFrontend over it."""

from __future__ import annotations

import asyncio

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import Command
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import StreamMeta
from broker.meta.quorum import LocalQuorum
from tests.meta.factories import create_stream, nodes_image


async def test_local_quorum_applies_and_raises_apply_errors() -> None:
    quorum = LocalQuorum(nodes_image(1))
    with pytest.raises(ShoalError) as not_started:
        await quorum.propose(create_stream("s1"))
    assert not_started.value.code is ErrorCode.UNAVAILABLE
    await quorum.start()
    assert quorum.is_ready()
    meta = await quorum.propose(create_stream("s1"))
    assert isinstance(meta, StreamMeta)
    with pytest.raises(ShoalError) as in_use:
        await quorum.propose(create_stream("s1"))
    assert in_use.value.code is ErrorCode.RESOURCE_IN_USE
    assert quorum.image().applied_commands == 3  # RegisterNode, then the two creates
    assert quorum.statistics().applied_commands == 3
    await quorum.stop()


async def test_wait_for_image_wakes_on_change_and_times_out() -> None:
    quorum = LocalQuorum(nodes_image(1))
    await quorum.start()
    waiter = asyncio.create_task(
        quorum.wait_for_image(lambda image: "s1" in image.streams, timeout_s=5)
    )
    await asyncio.sleep(0)  # let the waiter check the predicate once and block
    assert not waiter.done()
    await quorum.propose(create_stream("s1"))
    image = await waiter
    assert "s1" in image.streams
    with pytest.raises(ShoalError) as timed_out:
        await quorum.wait_for_image(lambda image: "never" in image.streams, timeout_s=0.01)
    assert timed_out.value.code is ErrorCode.UNAVAILABLE


class _StuckQuorum(LocalQuorum):
    """A quorum whose proposals never complete: the frontend's deadline must end them."""

    async def propose(self, command: Command) -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_frontend_bounds_every_proposal() -> None:
    frontend = MetadataFrontend(_StuckQuorum(), propose_timeout_ms=10)
    with pytest.raises(ShoalError) as timed_out:
        await frontend.propose(create_stream("s1"))
    assert timed_out.value.code is ErrorCode.UNAVAILABLE
    assert "may still be applied" in timed_out.value.message


async def test_frontend_passes_results_and_images_through() -> None:
    quorum = LocalQuorum(nodes_image(1))
    await quorum.start()
    frontend = MetadataFrontend(quorum)
    assert frontend.is_ready()
    meta = await frontend.propose(create_stream("s1"))
    assert isinstance(meta, StreamMeta)
    assert frontend.image() is quorum.image()
    image = await frontend.wait_for_image(lambda image: image.applied_commands == 2)
    assert image.applied_commands == 2
