"""Attacks from the operator's side, to prove that cars and cloud refuse them (SPEC §2.2, §5, R18).

On a car (a message on `tcu/{vin}/commands`, which only the `cloud` identity may write):

| attack             | what arrives                                            | the car answers `rejected` |
|--------------------|---------------------------------------------------------|----------------------------|
| `forged_signature` | a real command with one signature byte changed          | `bad_signature`            |
| `wrong_key`        | a command signed by another key under the cloud's kid   | `bad_signature`            |
| `unknown_key`      | a command signed by a key the car does not pin          | `unknown_key`              |
| `replay`           | a command the car already executed, captured and resent | `replayed`                 |
| `expired`          | a cloud-signed command whose `exp` has passed           | `expired`                  |
| `other_vin`        | a cloud-signed command addressed to another car         | `wrong_audience`           |

On the cloud (a car's own topics, written with the car's certificate — a cloned or tampered TCU):

| attack                 | what arrives                                         | the cloud refuses |
|------------------------|------------------------------------------------------|-------------------|
| `forged_status`        | the car's real status with one signature byte changed | `bad_signature`   |
| `replayed_status`      | the car's latest status, captured and sent again     | `duplicate`       |
| `status_wrong_key`     | a status signed by another key under the car's kid   | `bad_signature`   |
| `status_other_car_key` | a status signed with another car's (valid) key       | `unknown_key`     |

None of them changes any state. The forges build the tokens (pure); `Attacker` captures and injects them over
MQTT with certificates of its own. The broker makes a certificate's CN the client id (SPEC §7), so an attacker
using the real cloud's or car's certificate would only push that client off: it writes commands with a cloud
certificate no running cloud uses (`STOLEN_CLOUD`), and wiretaps and clones a car as `wiretap-<vin>` and
`clone-<vin>`, whose rights on that one car's topics the broker is given first (`attack_grants`,
`MosquittoBroker.grant`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from enum import StrEnum
from typing import Any

import aiomqtt

from broker.mosquitto import Grant, GrantAccess
from tcu_sim.clock import Clock
from tcu_sim.protocol import (
    CLOUD,
    MessageType,
    RefusalReason,
    RejectReason,
    Signer,
    SigningKey,
    Topics,
)

__all__ = [
    "STOLEN_CLOUD",
    "AttackKind",
    "Attacker",
    "CommandForge",
    "StatusForge",
    "attack_grants",
    "clone_identity",
    "flip_signature",
    "wiretap_identity",
]

# The broker certificate an attacker holding a cloud certificate uses: a cloud identity no cloud process of the
# simulation runs under (the client id is the CN, so `cloud` itself would just replace the real cloud's
# connection, which is not the attack under test).
STOLEN_CLOUD = "cloud-8"



def wiretap_identity(vin: str) -> str:
    """The certificate identity that reads the car's commands for the `replay` attack."""
    return f"wiretap-{vin.lower()}"


def clone_identity(vin: str) -> str:
    """The certificate identity of a cloned TCU that writes the car's status and events."""
    return f"clone-{vin.lower()}"


def attack_grants(topics: Topics, vins: Iterable[str]) -> dict[str, tuple[Grant, ...]]:
    """ACL grants (for `AclPolicy.named` / `MosquittoBroker.grant`) of the attacker's wiretap and clone of each car:
    what the car's own certificate could do, under identities of their own."""
    grants: dict[str, tuple[Grant, ...]] = {}
    for vin in vins:
        grants[wiretap_identity(vin)] = (Grant(GrantAccess.READ, topics.commands(vin)),)
        grants[clone_identity(vin)] = (
            Grant(GrantAccess.WRITE, topics.status(vin)),
            Grant(GrantAccess.WRITE, topics.events(vin)),
        )
    return grants


ClientFactory = Callable[..., aiomqtt.Client]
"""`factory(identity, identifier=...)` → an aiomqtt client with that identity's certificate
(`MosquittoBroker.client` is one)."""


class AttackKind(StrEnum):
    """Every attack (see the module docstring)."""

    FORGED_SIGNATURE = "forged_signature"
    WRONG_KEY = "wrong_key"
    UNKNOWN_KEY = "unknown_key"
    REPLAY = "replay"
    EXPIRED = "expired"
    OTHER_VIN = "other_vin"
    FORGED_STATUS = "forged_status"
    REPLAYED_STATUS = "replayed_status"
    STATUS_WRONG_KEY = "status_wrong_key"
    STATUS_OTHER_CAR_KEY = "status_other_car_key"

    @property
    def on_car(self) -> bool:
        """True for attacks on a car (a command), False for attacks on the cloud (a car message)."""
        return self in _CAR_ATTACKS

    @property
    def expected(self) -> RejectReason | RefusalReason:
        """The reason the car (`RejectReason`) or the cloud (`RefusalReason`) must give."""
        return _EXPECTED[self]


_CAR_ATTACKS = frozenset(
    {
        AttackKind.FORGED_SIGNATURE,
        AttackKind.WRONG_KEY,
        AttackKind.UNKNOWN_KEY,
        AttackKind.REPLAY,
        AttackKind.EXPIRED,
        AttackKind.OTHER_VIN,
    }
)
_EXPECTED: dict[AttackKind, RejectReason | RefusalReason] = {
    AttackKind.FORGED_SIGNATURE: RejectReason.BAD_SIGNATURE,
    AttackKind.WRONG_KEY: RejectReason.BAD_SIGNATURE,
    AttackKind.UNKNOWN_KEY: RejectReason.UNKNOWN_KEY,
    AttackKind.REPLAY: RejectReason.REPLAYED,
    AttackKind.EXPIRED: RejectReason.EXPIRED,
    AttackKind.OTHER_VIN: RejectReason.WRONG_AUDIENCE,
    AttackKind.FORGED_STATUS: RefusalReason.BAD_SIGNATURE,
    AttackKind.REPLAYED_STATUS: RefusalReason.DUPLICATE,
    AttackKind.STATUS_WRONG_KEY: RefusalReason.BAD_SIGNATURE,
    AttackKind.STATUS_OTHER_CAR_KEY: RefusalReason.UNKNOWN_KEY,
}


def flip_signature(token: str | bytes) -> str:
    """`token` with the first character of its signature changed (still canonical base64url, so it is the
    signature check that fails, not the decoding)."""
    text = token.decode() if isinstance(token, bytes) else token
    head, payload, signature = text.split(".")
    first = "A" if signature[0] != "A" else "B"
    return f"{head}.{payload}.{first}{signature[1:]}"


class CommandForge:
    """Builds the command tokens of the attacks on a car. `cloud_key` is the simulator's cloud key: with it the
    forge can make commands that are valid in every respect but one (expired, for another car)."""

    def __init__(self, cloud_key: SigningKey, clock: Clock, *, op: str = "unlock") -> None:
        self.cloud = Signer(cloud_key, CLOUD, clock)
        self.clock = clock
        self.op = op
        self.cloud_kid = cloud_key.kid
        self._impostor = SigningKey.generate(cloud_key.kid)  # another key under the cloud's kid
        self._stranger = SigningKey.generate("attacker-1")  # a key the cars never pinned

    def __repr__(self) -> str:
        return f"CommandForge(op={self.op!r}, cloud_kid={self.cloud_kid!r})"

    def _body(self, kind: str) -> dict[str, Any]:
        return {"command_id": f"attack-{kind}-{secrets.token_hex(4)}", "op": self.op, "params": {}}

    def valid(self, vin: str, seq: int) -> str:
        """A genuine command (the base the forged ones start from)."""
        return self.cloud.sign(MessageType.COMMAND, aud=vin, seq=seq, body=self._body("valid"))

    def forged_signature(self, vin: str, seq: int) -> str:
        return flip_signature(self.valid(vin, seq))

    def wrong_key(self, vin: str, seq: int) -> str:
        signer = Signer(self._impostor, CLOUD, self.clock)
        return signer.sign(MessageType.COMMAND, aud=vin, seq=seq, body=self._body("wrong_key"))

    def unknown_key(self, vin: str, seq: int) -> str:
        signer = Signer(self._stranger, CLOUD, self.clock)
        return signer.sign(MessageType.COMMAND, aud=vin, seq=seq, body=self._body("unknown_key"))

    def expired(self, vin: str, seq: int, *, age_s: float = 3600.0) -> str:
        exp = self.clock.now() - age_s
        return self.cloud.sign(MessageType.COMMAND, aud=vin, seq=seq, body=self._body("expired"), exp=exp)

    def for_other_vin(self, other_vin: str, seq: int) -> str:
        return self.cloud.sign(MessageType.COMMAND, aud=other_vin, seq=seq, body=self._body("other_vin"))

    def forge(self, kind: AttackKind, vin: str, seq: int, *, other_vin: str | None = None) -> str:
        """The token of a car attack that needs no capture (everything but `replay`)."""
        if kind is AttackKind.FORGED_SIGNATURE:
            return self.forged_signature(vin, seq)
        if kind is AttackKind.WRONG_KEY:
            return self.wrong_key(vin, seq)
        if kind is AttackKind.UNKNOWN_KEY:
            return self.unknown_key(vin, seq)
        if kind is AttackKind.EXPIRED:
            return self.expired(vin, seq)
        if kind is AttackKind.OTHER_VIN:
            if other_vin is None:
                raise ValueError("other_vin needs the VIN the command is addressed to")
            return self.for_other_vin(other_vin, seq)
        raise ValueError(f"{kind.value} is not forged: it replays or attacks the cloud")


class StatusForge:
    """Builds the status tokens of the attacks on the cloud."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __repr__(self) -> str:
        return "StatusForge()"

    def forged(self, captured: str | bytes) -> str:
        return flip_signature(captured)

    def wrong_key(self, vin: str, body: dict[str, Any], seq: int) -> str:
        signer = Signer(SigningKey.generate(vin), vin, self.clock)  # the car's kid, not the car's key
        return signer.sign(MessageType.STATUS, aud=CLOUD, seq=seq, body=body)

    def other_car_key(self, vin: str, other_key: SigningKey, body: dict[str, Any], seq: int) -> str:
        signer = Signer(other_key, vin, self.clock)  # a real key of the fleet, but not this car's
        return signer.sign(MessageType.STATUS, aud=CLOUD, seq=seq, body=body)


class Attacker:
    """Captures and injects over MQTT (`factory` gives clients by identity; see `ClientFactory`)."""

    def __init__(self, factory: ClientFactory, topics: Topics | None = None) -> None:
        self.factory = factory
        self.topics = topics or Topics()
        self.injected = 0

    def __repr__(self) -> str:
        return f"Attacker(injected={self.injected})"

    def _client(self, identity: str, role: str) -> aiomqtt.Client:
        return self.factory(identity, identifier=f"attacker-{role}-{secrets.token_hex(4)}")

    async def inject_command(self, vin: str, token: str | bytes) -> None:
        """Publish a command to the car as the cloud identity would."""
        payload = token.encode() if isinstance(token, str) else token
        async with self._client(STOLEN_CLOUD, "cloud") as client:
            await client.publish(self.topics.commands(vin), payload, qos=1)
        self.injected += 1

    async def inject_status(self, vin: str, token: str | bytes) -> None:
        """Publish a status on the car's topic with the car's own certificate (a cloned TCU)."""
        payload = token.encode() if isinstance(token, str) else token
        async with self._client(clone_identity(vin), "car") as client:
            await client.publish(self.topics.status(vin), payload, qos=1)
        self.injected += 1

    async def latest_status(self, vin: str, timeout: float = 5.0) -> bytes:
        """The car's retained status token (as the cloud identity reads it)."""
        async with self._client(STOLEN_CLOUD, "reader") as client:
            await client.subscribe(self.topics.status(vin), qos=1)
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes) and payload:
                        return payload
        raise TimeoutError(f"no retained status of {vin}")  # pragma: no cover - the iterator only ends on error

    @contextlib.asynccontextmanager
    async def wiretap(self, vin: str) -> AsyncIterator[list[bytes]]:
        """Record every command sent to the car while the context is open (as `wiretap-<vin>`)."""
        captured: list[bytes] = []
        async with self._client(wiretap_identity(vin), "wiretap") as client:
            await client.subscribe(self.topics.commands(vin), qos=1)

            async def pump() -> None:
                async for message in client.messages:
                    if isinstance(message.payload, bytes):
                        captured.append(message.payload)

            task = asyncio.create_task(pump(), name=f"attacker.wiretap[{vin}]")
            try:
                yield captured
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
