"""MQTT topics of the wire contract (SPEC §2.1), built and parsed in one place.

    {prefix}/tcu/{vin}/status|events|commands|results|connection
    {prefix}/app/{client_id}/requests|responses|events
    {prefix}/sim/{vin}/control, {prefix}/sim/{vin}/control/results

A level built from outside input (a VIN, a client id) is refused with ProtocolError before any topic is built
when it is empty or holds `+`, `#`, `/`, NUL or another non-printable character (BAD_TOPIC); a VIN level must
also be a valid VIN (BAD_VIN).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, NamedTuple

from ._errors import ProtocolError, RefusalReason
from ._vin import validate_vin

__all__ = ["ConnectionState", "ParsedTopic", "TopicKind", "TopicRoot", "Topics", "check_topic_level"]

_FORBIDDEN_IN_LEVEL = frozenset("+#/\x00")
_CLIENT_ID_MAX = 128


class TopicRoot(StrEnum):
    """The first level of a topic (after the prefix): whose topic it is."""

    TCU = "tcu"
    APP = "app"
    SIM = "sim"


class TopicKind(StrEnum):
    """The last level of a topic: what travels on it.

    `EVENTS` (car events, `tcu/{vin}/events`) and `APP_EVENTS` (push events, `app/{client_id}/events`) share
    the topic level `events` but are distinct members (an alias would make them equal); `.level` is the topic
    level of every member, `.root` its first level.
    """

    STATUS = "status"
    EVENTS = "events"
    COMMANDS = "commands"
    RESULTS = "results"
    CONNECTION = "connection"
    CONTROL = "control"
    APP_REQUESTS = "requests"
    APP_RESPONSES = "responses"
    APP_EVENTS = "app_events"

    @property
    def level(self) -> str:
        """The last topic level for this kind."""
        return "events" if self is TopicKind.APP_EVENTS else self.value

    @property
    def root(self) -> TopicRoot:
        """The first topic level for this kind."""
        return _ROOT_OF[self]


_ROOT_OF: Final = {
    TopicKind.STATUS: TopicRoot.TCU,
    TopicKind.EVENTS: TopicRoot.TCU,
    TopicKind.COMMANDS: TopicRoot.TCU,
    TopicKind.RESULTS: TopicRoot.TCU,
    TopicKind.CONNECTION: TopicRoot.TCU,
    TopicKind.CONTROL: TopicRoot.SIM,
    TopicKind.APP_REQUESTS: TopicRoot.APP,
    TopicKind.APP_RESPONSES: TopicRoot.APP,
    TopicKind.APP_EVENTS: TopicRoot.APP,
}
_KIND_BY_LEVELS: Final = {(kind.root.value, kind.level): kind for kind in TopicKind}


class ConnectionState(StrEnum):
    """Payload of `tcu/{vin}/connection` (plain text, retained): `online`, or `offline` as last will."""

    ONLINE = "online"
    OFFLINE = "offline"


class ParsedTopic(NamedTuple):
    """What a topic is about: its kind and its key (the VIN, or the app's client id)."""

    kind: TopicKind
    key: str

    @property
    def root(self) -> TopicRoot:
        """`tcu`, `app` or `sim`."""
        return self.kind.root


def check_topic_level(value: str, what: str = "topic level") -> str:
    """Return `value` if it can be one topic level; else ProtocolError(BAD_TOPIC) saying why."""
    if not isinstance(value, str):
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"{what} is empty")
    bad = _FORBIDDEN_IN_LEVEL.intersection(value)
    if bad:
        shown = ", ".join(sorted(repr(c) for c in bad))
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"{what} {value[:64]!r} contains {shown}")
    if not value.isprintable():
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"{what} {value[:64]!r} contains a non-printable character")
    return value


def _check_vin_level(vin: str) -> str:
    return validate_vin(check_topic_level(vin, "VIN"))


def _check_client_id(client_id: str) -> str:
    check_topic_level(client_id, "client id")
    if len(client_id) > _CLIENT_ID_MAX:
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"client id longer than {_CLIENT_ID_MAX} characters")
    if client_id.startswith("$"):  # $-topics are the broker's own ($SYS, $share)
        raise ProtocolError(RefusalReason.BAD_TOPIC, f"client id {client_id[:64]!r} starts with '$'")
    return client_id


class Topics:
    """Builds and parses every topic, under an optional prefix (one or more levels, e.g. `test-3f2a`)."""

    __slots__ = ("_prefix", "prefix")

    def __init__(self, prefix: str = "") -> None:
        prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
        if prefix:
            for level in prefix.split("/"):
                check_topic_level(level, "topic prefix level")
            if prefix.startswith("$"):
                raise ProtocolError(RefusalReason.BAD_TOPIC, "topic prefix must not start with '$'")
        self.prefix: str = prefix
        self._prefix = f"{prefix}/" if prefix else ""

    def _build(self, kind: TopicKind, key: str) -> str:
        return f"{self._prefix}{kind.root.value}/{key}/{kind.level}"

    # --- car topics
    def status(self, vin: str) -> str:
        """`tcu/{vin}/status`: signed status snapshots (retained)."""
        return self._build(TopicKind.STATUS, _check_vin_level(vin))

    def events(self, vin: str) -> str:
        """`tcu/{vin}/events`: signed car events."""
        return self._build(TopicKind.EVENTS, _check_vin_level(vin))

    def commands(self, vin: str) -> str:
        """`tcu/{vin}/commands`: signed commands (never retained)."""
        return self._build(TopicKind.COMMANDS, _check_vin_level(vin))

    def results(self, vin: str) -> str:
        """`tcu/{vin}/results`: signed command results."""
        return self._build(TopicKind.RESULTS, _check_vin_level(vin))

    def connection(self, vin: str) -> str:
        """`tcu/{vin}/connection`: `online` / `offline` (retained; `offline` is the last will)."""
        return self._build(TopicKind.CONNECTION, _check_vin_level(vin))

    def control(self, vin: str) -> str:
        """`sim/{vin}/control`: simulator control (unsigned)."""
        return self._build(TopicKind.CONTROL, _check_vin_level(vin))

    def control_results(self, vin: str) -> str:
        """`sim/{vin}/control/results`: the car's `ControlResult` for each control that carried an `id`."""
        return f"{self.control(vin)}/results"

    def all_control_results(self) -> str:
        """`sim/+/control/results`: every car's control replies (what the operator reads)."""
        return f"{self._build(TopicKind.CONTROL, '+')}/results"

    def for_vin(self, kind: TopicKind, vin: str) -> str:
        """The topic of `kind` for `vin` (any car or control kind)."""
        if kind.root is TopicRoot.APP:
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"{kind.name} is an app topic, not a car topic")
        return self._build(kind, _check_vin_level(vin))

    # --- app topics
    def app_requests(self, client_id: str) -> str:
        """`app/{client_id}/requests`: app → cloud."""
        return self._build(TopicKind.APP_REQUESTS, _check_client_id(client_id))

    def app_responses(self, client_id: str) -> str:
        """`app/{client_id}/responses`: cloud → app."""
        return self._build(TopicKind.APP_RESPONSES, _check_client_id(client_id))

    def app_events(self, client_id: str) -> str:
        """`app/{client_id}/events`: push notifications, cloud → app."""
        return self._build(TopicKind.APP_EVENTS, _check_client_id(client_id))

    # --- subscription filters
    def all_tcu(self, kind: TopicKind) -> str:
        """The filter for `kind` from every car: `tcu/+/status`, ... (`sim/+/control` for CONTROL)."""
        if kind.root is TopicRoot.APP:
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"{kind.name} is an app topic; use all_app()")
        return self._build(kind, "+")

    def all_app(self, kind: TopicKind) -> str:
        """The filter for `kind` from every app client: `app/+/requests`, ..."""
        if kind.root is not TopicRoot.APP:
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"{kind.name} is a car topic; use all_tcu()")
        return self._build(kind, "+")

    def all_app_requests(self) -> str:
        """`app/+/requests`: what the cloud subscribes to for the app API."""
        return self.all_app(TopicKind.APP_REQUESTS)

    @staticmethod
    def shared(topic_filter: str, group: str = "cloud") -> str:
        """An MQTT 5 shared subscription, `$share/{group}/{filter}`: cloud instances split the load."""
        return f"$share/{check_topic_level(group, 'share group')}/{topic_filter}"

    # --- parsing
    def parse(self, topic: str) -> ParsedTopic:
        """What `topic` is about; ProtocolError BAD_TOPIC when it is none of ours, BAD_VIN for a bad VIN."""
        if not isinstance(topic, str):
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"topic must be a string, got {type(topic).__name__}")
        if self._prefix:
            if not topic.startswith(self._prefix):
                raise ProtocolError(RefusalReason.BAD_TOPIC, f"topic {topic[:128]!r} lacks prefix {self.prefix!r}")
            topic = topic[len(self._prefix) :]
        levels = topic.split("/")
        if len(levels) != 3:
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"topic {topic[:128]!r} is not root/key/kind")
        root, key, last = levels
        kind = _KIND_BY_LEVELS.get((root, last))
        if kind is None:
            raise ProtocolError(RefusalReason.BAD_TOPIC, f"topic {topic[:128]!r} is not a tcu-sim topic")
        key = _check_client_id(key) if root == TopicRoot.APP else _check_vin_level(key)
        return ParsedTopic(kind, key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topics) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)

    def __repr__(self) -> str:
        return f"Topics(prefix={self.prefix!r})"
