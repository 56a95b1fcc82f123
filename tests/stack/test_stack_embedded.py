"""`LocalStack` on the embedded amqtt broker (what a laptop without Mosquitto gets): the same demo, with mutual TLS
and app logins enforced by the embedded broker's plugins, MQTT 3.1.1 for the cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from stack_kit import WAIT, demo, demo_user, local_stack

from tcu_sim.protocol import CommandState
from tcu_sim.stack import EMBEDDED_LIMITS, BrokerKind, EnrolmentOutcome


@pytest.mark.slow
async def test_the_demo_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    fleet = demo()
    email, password, spin = demo_user(fleet)
    async with local_stack(tmp_path / "state", fleet, broker="embedded") as stack:
        assert stack.broker.kind is BrokerKind.EMBEDDED
        assert stack.broker.limits == EMBEDDED_LIMITS
        assert stack.cloud.config.protocol == "3.1.1"
        assert stack.fleet.online_count == 20
        vins = [c.vin for c in stack.users if c.email == email and c.outcome is EnrolmentOutcome.ENROLLED]
        assert len(vins) == 9
        async with stack.app_client(timeout=WAIT) as app:
            await app.login(email, password)
            command_id = await app.unlock(vins[-1], spin)
            assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        assert stack.fleet.sessions[vins[-1]].vehicle.locked is False
