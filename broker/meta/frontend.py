"""MetadataFrontend: what the gateway calls to change or read the metadata.

A thin wrapper over a MetadataQuorum that puts one deadline on every proposal
(`limits.metadata_propose_timeout_ms` unless the caller passes another), so no request waits
on the quorum without bound. It adds no rules: validation happens in `state_machine.apply`
(against the image at apply time), and an early check in the gateway is only an optimisation.

A node view; call from the event loop that started the quorum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import Command
from broker.meta.image import MetadataImage
from broker.meta.quorum import MetadataQuorum


class MetadataFrontend:
    def __init__(
        self,
        quorum: MetadataQuorum,
        *,
        propose_timeout_ms: int = limits.metadata_propose_timeout_ms,
    ) -> None:
        assert propose_timeout_ms > 0
        self._quorum = quorum
        self._propose_timeout_s = propose_timeout_ms / 1000

    async def propose(self, command: Command) -> object:
        """The command's result, or its ShoalError. UNAVAILABLE (no leader, deadline passed)
        is an unknown outcome: the command may still be applied."""
        try:
            async with asyncio.timeout(self._propose_timeout_s):
                return await self._quorum.propose(command)
        except TimeoutError as exc:
            raise ShoalError(
                ErrorCode.UNAVAILABLE,
                "Metadata unavailable: the metadata command timed out. "
                "The command may still be applied.",
            ) from exc

    def image(self) -> MetadataImage:
        """This node's latest image (may lag the leader)."""
        return self._quorum.image()

    async def wait_for_image(
        self, predicate: Callable[[MetadataImage], bool], *, timeout_s: float | None = None
    ) -> MetadataImage:
        """The first local image satisfying `predicate`; UNAVAILABLE after the deadline
        (the propose deadline unless given)."""
        deadline_s = self._propose_timeout_s if timeout_s is None else timeout_s
        return await self._quorum.wait_for_image(predicate, timeout_s=deadline_s)

    def is_ready(self) -> bool:
        return self._quorum.is_ready()
