"""MetadataFrontend: what the gateway calls to change or read the metadata.

A thin wrapper over a MetadataQuorum that puts one deadline on every proposal
(`limits.metadata_propose_timeout_ms` unless the caller passes another), so no request waits
on the quorum without bound. It adds no rules: validation happens in `state_machine.apply`
(against the image at apply time), and an early check in the gateway is only an optimisation.
One gate of its own: a command the cluster's metadata format cannot carry yet (a feature of a
newer format during a rolling upgrade, `metadata_format.py`) is refused before it is proposed,
because a member still on the older version could not decode it.

A node view; call from the event loop that started the quorum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import Command, SetMetadataFormat, required_format
from broker.meta.image import MetadataImage
from broker.meta.metadata_format import FIRST_FORMAT
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
        # SetMetadataFormat is the exception: its proposer (the controller, or the node that
        # just created the cluster) knows that every member reads it.
        if not isinstance(command, SetMetadataFormat):
            self.require_format(required_format(command))
        try:
            async with asyncio.timeout(self._propose_timeout_s):
                return await self._quorum.propose(command)
        except TimeoutError as exc:
            raise ShoalError(
                ErrorCode.UNAVAILABLE,
                error_messages.METADATA_COMMAND_TIMED_OUT,
            ) from exc

    def require_format(self, needed: int) -> None:
        """Refuses (InvalidArgumentException) what needs a metadata format above the cluster's:
        a command, or a member of one whose level `required_format` cannot see (a nested
        record's)."""
        image = self._quorum.image()
        # An image that has not applied InitCluster yet (a node still catching up) does not
        # know the cluster's format: only the first is safe.
        active = image.metadata_format if image.cluster_id else FIRST_FORMAT
        if needed > active:
            # The level only rises, so a stale image here can only refuse too early.
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.metadata_format_needed(needed=needed, active=active),
            )

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
