"""The on-demand autoscaler: the controller's periodic look at ON_DEMAND streams' shard loads.

It runs on every node and acts only on the metadata quorum's leader (as the controller does,
and checked the same way on every pass). Each pass reads the image: for every ON_DEMAND stream,
what its shard leaders reported (`meta.capacity.loads_for_stream`), and asks
`streams.autoscaling.decide` what to do, with an `AutoscalingHistory` that lives as long as
this node's leadership term (a new controller starts with empty timers, so it waits a full
hot or cold spell before acting, and with each stream's last split or merge from its scaling
log, so the cooldown survives the change: a leader change delays decisions, it never hastens
one).

Decisions become metadata commands, validated again at apply time:
- Split and Merge: the same `BeginReshard` a client's SplitShard or MergeShards proposes, marked
  `automatic_reason` (allowed on ON_DEMAND streams only; the reason goes to the stream's scaling
  log in the same command). The controller then seals the parents and completes the reshard as
  for any other, so records in flight land on one side only.
- HotKey notices, and decisions the metadata refused (the account's shard limit, a concurrent
  reshard, the mode switched meanwhile): a `RecordScalingEvent`.

Rate limiting: `decide` takes at most one split or merge per stream per cooldown, and nothing
while the stream is UPDATING; a pass proposes at most `actions_per_pass_max` commands.

Time: the image's states are judged on the wall clock (the proposers' clocks); the history
needs a clock that never goes back, so a wall clock stepping back is held at its last value.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from broker import limits
from broker.clock import Clock
from broker.errors import ShoalError
from broker.meta import capacity
from broker.meta.capacity_table import ScalingEvent, ScalingEventKind
from broker.meta.commands import BeginReshard, Command, RecordScalingEvent
from broker.meta.controller import ControllerQuorum
from broker.meta.image import MetadataImage, ReshardKind, StreamMeta, StreamMode
from broker.meta.probe import AutoscalerAction, AutoscalerProbe
from broker.streams.autoscaling import (
    AutoscalingHistory,
    AutoscalingPolicy,
    Decision,
    HotKey,
    Merge,
    Split,
    decide,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalerSettings:
    """Built from `config.Knobs` by the node; tests shorten the times."""

    policy: AutoscalingPolicy = field(default_factory=AutoscalingPolicy)
    pass_interval_ms: int = 1_000
    load_stale_ms: int = 30_000  # a report older than this is not trusted (Knobs)
    propose_timeout_ms: int = limits.metadata_propose_timeout_ms
    stream_updating_ms: int = 200  # the reshard's UPDATING time (Knobs.stream_updating_ms)
    shard_count_per_account_max: int = limits.shard_count_per_account_default
    actions_per_pass_max: int = 64

    def __post_init__(self) -> None:
        assert self.pass_interval_ms > 0
        assert self.load_stale_ms > 0
        assert self.propose_timeout_ms > 0
        assert self.actions_per_pass_max >= 1


class Autoscaler:
    """Lifecycle: construct once per node; `await run()` in the node's TaskGroup (infinite on
    purpose, cancelled at node stop). Loop-bound. A node view that acts only while leading."""

    def __init__(
        self, *, quorum: ControllerQuorum, clock: Clock, settings: AutoscalerSettings
    ) -> None:
        self._quorum = quorum
        self._clock = clock
        self._settings = settings
        self._history: AutoscalingHistory | None = None
        self._term: int | None = None
        self._last_now_ms = 0
        self._probe: AutoscalerProbe | None = None

    def report_to(self, probe: AutoscalerProbe) -> None:
        """Count this node's decisions in `probe` (`kinesis_autoscaler_actions_total`), and
        show the configured ceiling it scales streams to."""
        probe.ceiling(self._settings.policy.max_open_shards)
        self._probe = probe

    async def run(self) -> None:
        """Passes forever; ends when cancelled. Refusals and timeouts are outcomes of a pass
        (`_propose`); anything else is a bug, and stops the node as any background failure."""
        while True:
            await self._clock.sleep(self._settings.pass_interval_ms)
            await self.run_pass()

    def _current_history(self) -> AutoscalingHistory | None:
        if not self._quorum.is_quorum_leader():
            self._history, self._term = None, None
            return None
        term = self._quorum.statistics().term
        if self._history is None or self._term != term:
            self._history, self._term = _history_from_log(self._quorum.image()), term
        return self._history

    def decisions(self, image: MetadataImage) -> list[tuple[StreamMeta, Decision]]:
        """What to do now for every ON_DEMAND stream; empty unless this node is the leader."""
        history = self._current_history()
        if history is None:
            return []
        now_ms = self._last_now_ms = max(self._last_now_ms, self._clock.wall_ms())
        settings = self._settings
        live = [s for s in image.streams.values() if not s.is_gone(now_ms=now_ms)]
        history.retain(s.uid for s in live if s.mode is StreamMode.ON_DEMAND)
        chosen: list[tuple[StreamMeta, Decision]] = []
        for stream in sorted(live, key=lambda s: s.uid):
            if stream.mode is not StreamMode.ON_DEMAND:
                continue
            loads = capacity.loads_for_stream(
                image, stream, now_ms=now_ms, stale_ms=settings.load_stale_ms
            )
            chosen.extend(
                (stream, decision)
                for decision in decide(stream, loads, settings.policy, history, now_ms)
            )
        return chosen[: settings.actions_per_pass_max]

    async def run_pass(self) -> int:
        """One pass: decide, then propose each decision. Returns the commands accepted."""
        accepted = 0
        for stream, decision in self.decisions(self._quorum.image()):
            if await self._carry_out(stream, decision):
                accepted += 1
        return accepted

    async def _carry_out(self, stream: StreamMeta, decision: Decision) -> bool:
        now_ms = self._clock.wall_ms()
        match decision:
            case Split():
                command: Command = BeginReshard(
                    now_ms=now_ms,
                    name=stream.name,
                    kind=ReshardKind.SPLIT,
                    shard_index=decision.shard_index,
                    new_starting_hash_key=decision.new_starting_hash_key,
                    updating_ms=self._settings.stream_updating_ms,
                    shard_count_per_account_max=self._settings.shard_count_per_account_max,
                    automatic_reason=decision.reason,
                )
                shard_ids: tuple[int, ...] = (decision.shard_index,)
            case Merge():
                command = BeginReshard(
                    now_ms=now_ms,
                    name=stream.name,
                    kind=ReshardKind.MERGE,
                    shard_index=decision.shard_index,
                    adjacent_shard_index=decision.adjacent_shard_index,
                    updating_ms=self._settings.stream_updating_ms,
                    shard_count_per_account_max=self._settings.shard_count_per_account_max,
                    automatic_reason=decision.reason,
                )
                shard_ids = (decision.shard_index, decision.adjacent_shard_index)
            case HotKey():
                command = _event(
                    stream,
                    ScalingEventKind.HOT_KEY,
                    (decision.shard_index,),
                    decision.reason,
                    now_ms,
                )
                shard_ids = (decision.shard_index,)
        log.info(
            "autoscaler_decision",
            extra={
                "stream": stream.name,
                "decision": type(decision).__name__,
                "shards": list(shard_ids),
                "reason": decision.reason,
            },
        )
        error = await self._propose(command)
        if self._probe is not None and (error is None or isinstance(command, BeginReshard)):
            self._probe.acted(stream.name, _action(decision) if error is None else "refused")
        if error is None:
            return True
        if isinstance(command, BeginReshard):
            refused = _event(
                stream,
                ScalingEventKind.REFUSED,
                shard_ids,
                f"{decision.reason}; refused: {error}",
                self._clock.wall_ms(),
            )
            await self._propose(refused)
        return False

    async def _propose(self, command: Command) -> str | None:
        """None once applied, or why not (a refusal, or no answer in time)."""
        try:
            async with asyncio.timeout(self._settings.propose_timeout_ms / 1000):
                await self._quorum.propose(command)
        except ShoalError as error:
            log.info(
                "autoscaler_command_refused",
                extra={"command": type(command).__name__, "error": error.message},
            )
            return error.message
        except TimeoutError:
            log.warning("autoscaler_command_timed_out", extra={"command": type(command).__name__})
            return "no answer from the metadata quorum in time"
        return None


def _action(decision: Decision) -> AutoscalerAction:
    match decision:
        case Split():
            return "split"
        case Merge():
            return "merge"
        case HotKey():
            return "hot_key"


def _history_from_log(image: MetadataImage) -> AutoscalingHistory:
    """A new controller's memory: no timers, but each ON_DEMAND stream's last automatic split
    or merge from its scaling log, so that the cooldown a previous controller started holds."""
    history = AutoscalingHistory()
    for stream in sorted(image.streams.values(), key=lambda s: s.uid):
        if stream.mode is not StreamMode.ON_DEMAND:
            continue
        acted = [
            event.time_ms
            for event in capacity.scaling_events(image, stream)
            if event.kind in (ScalingEventKind.SPLIT, ScalingEventKind.MERGE)
        ]
        if acted:
            history.remember_decision(stream.uid, max(acted))
    return history


def _event(
    stream: StreamMeta,
    kind: ScalingEventKind,
    shard_indices: tuple[int, ...],
    reason: str,
    now_ms: int,
) -> RecordScalingEvent:
    return RecordScalingEvent(
        now_ms=now_ms,
        stream_uid=stream.uid,
        event=ScalingEvent(
            time_ms=now_ms,
            kind=kind,
            shard_ids=tuple(f"shardId-{index:012d}" for index in shard_indices),
            reason=reason,
        ),
    )


def policy_from_knobs(
    *,
    split_bytes_per_second: int,
    split_records_per_second: int,
    merge_percent: int,
    hot_for_ms: int,
    cold_for_ms: int,
    cooldown_ms: int,
    min_open_shards: int,
    max_open_shards: int,
) -> AutoscalingPolicy:
    """The policy from the node's knobs; one shard's capacity is AWS's, what the split rates
    and the merge fraction are judged against whatever a cluster's throttles allow."""
    return AutoscalingPolicy(
        split_bytes_per_second=split_bytes_per_second,
        split_records_per_second=split_records_per_second,
        merge_fraction=merge_percent / 100,
        hot_for_ms=hot_for_ms,
        cold_for_ms=cold_for_ms,
        cooldown_ms=cooldown_ms,
        min_open_shards=min_open_shards,
        max_open_shards=max_open_shards,
    )
