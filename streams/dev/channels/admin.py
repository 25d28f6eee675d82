"""The simulator's own HTTP API beyond the channel wire: ground truth, behaviour, its clock."""

from __future__ import annotations

from streams.dev.channels.config import ChannelBehaviour
from streams.dev.channels.simulator import ClockAdvance, GroundTruth
from streams.gateway.channels import ChannelClient, parse_answer


class SimulatorClient(ChannelClient):
    """A channel client that may also ask the simulator what really happened, and steer it
    (docs/testing.md, "The channel simulator")."""

    async def ground_truth(self) -> GroundTruth:
        return parse_answer(
            GroundTruth.model_validate_json, await self._call("GET", "/ground-truth")
        )

    async def set_behaviour(self, channel: str, behaviour: ChannelBehaviour) -> None:
        await self._call("POST", f"/admin/behaviour/{channel}", behaviour)

    async def advance_clock(self, advance_ms: int) -> None:
        await self._call("POST", "/admin/clock", ClockAdvance(advance_ms=advance_ms))
