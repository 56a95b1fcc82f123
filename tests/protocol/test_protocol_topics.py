"""Topics (SPEC §2.1): builders, filters, parsing, and refusal of levels that would change a topic's meaning."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu_sim.protocol import (
    ConnectionState,
    ParsedTopic,
    ProtocolError,
    RefusalReason,
    TopicKind,
    TopicRoot,
    Topics,
)

VIN = "VSSZZZKLZMR012345"
CLIENT = "app-7f3a"
TOPICS = Topics()


def test_car_topics() -> None:
    assert TOPICS.status(VIN) == f"tcu/{VIN}/status"
    assert TOPICS.events(VIN) == f"tcu/{VIN}/events"
    assert TOPICS.commands(VIN) == f"tcu/{VIN}/commands"
    assert TOPICS.results(VIN) == f"tcu/{VIN}/results"
    assert TOPICS.connection(VIN) == f"tcu/{VIN}/connection"
    assert TOPICS.control(VIN) == f"sim/{VIN}/control"
    assert TOPICS.for_vin(TopicKind.RESULTS, VIN) == f"tcu/{VIN}/results"


def test_app_topics() -> None:
    assert TOPICS.app_requests(CLIENT) == f"app/{CLIENT}/requests"
    assert TOPICS.app_responses(CLIENT) == f"app/{CLIENT}/responses"
    assert TOPICS.app_events(CLIENT) == f"app/{CLIENT}/events"


def test_filters() -> None:
    assert TOPICS.all_tcu(TopicKind.STATUS) == "tcu/+/status"
    assert TOPICS.all_tcu(TopicKind.EVENTS) == "tcu/+/events"
    assert TOPICS.all_tcu(TopicKind.CONTROL) == "sim/+/control"
    assert TOPICS.all_app_requests() == "app/+/requests"
    assert TOPICS.all_app(TopicKind.APP_EVENTS) == "app/+/events"
    assert Topics.shared(TOPICS.all_tcu(TopicKind.STATUS)) == "$share/cloud/tcu/+/status"
    assert Topics.shared("app/+/requests", group="api") == "$share/api/app/+/requests"
    with pytest.raises(ProtocolError):
        TOPICS.all_tcu(TopicKind.APP_REQUESTS)
    with pytest.raises(ProtocolError):
        TOPICS.all_app(TopicKind.STATUS)
    with pytest.raises(ProtocolError):
        TOPICS.for_vin(TopicKind.APP_EVENTS, VIN)
    with pytest.raises(ProtocolError):
        Topics.shared("tcu/+/status", group="a/b")


def test_prefix() -> None:
    topics = Topics("test-3f2a/run1/")
    assert topics.prefix == "test-3f2a/run1"
    assert topics.status(VIN) == f"test-3f2a/run1/tcu/{VIN}/status"
    assert topics.all_tcu(TopicKind.COMMANDS) == "test-3f2a/run1/tcu/+/commands"
    assert topics.parse(f"test-3f2a/run1/app/{CLIENT}/responses") == ParsedTopic(TopicKind.APP_RESPONSES, CLIENT)
    assert repr(topics) == "Topics(prefix='test-3f2a/run1')"
    assert topics == Topics("test-3f2a/run1") != TOPICS


@pytest.mark.parametrize("prefix", ["a+b", "#", "a//b", "x\x00", "$SYS"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Topics(prefix)
    assert info.value.reason is RefusalReason.BAD_TOPIC


def test_every_kind_round_trips_through_parse() -> None:
    for kind in TopicKind:
        key = CLIENT if kind.root is TopicRoot.APP else VIN
        topic = f"{kind.root}/{key}/{kind.level}"
        parsed = TOPICS.parse(topic)
        assert parsed == ParsedTopic(kind, key)
        assert parsed.root is kind.root


def test_car_and_app_events_are_told_apart() -> None:
    assert TOPICS.parse(f"tcu/{VIN}/events").kind is TopicKind.EVENTS
    assert TOPICS.parse(f"app/{CLIENT}/events").kind is TopicKind.APP_EVENTS
    assert len({TopicKind.EVENTS, TopicKind.APP_EVENTS}) == 2  # distinct members, not aliases
    assert TopicKind.EVENTS.level == TopicKind.APP_EVENTS.level == "events"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", RefusalReason.BAD_TOPIC),
        ("tcu", RefusalReason.BAD_TOPIC),
        (f"tcu/{VIN}", RefusalReason.BAD_TOPIC),
        (f"tcu/{VIN}/status/extra", RefusalReason.BAD_TOPIC),
        (f"/tcu/{VIN}/status", RefusalReason.BAD_TOPIC),
        (f"tcu/{VIN}/requests", RefusalReason.BAD_TOPIC),
        (f"app/{CLIENT}/status", RefusalReason.BAD_TOPIC),
        (f"sim/{VIN}/status", RefusalReason.BAD_TOPIC),
        (f"car/{VIN}/status", RefusalReason.BAD_TOPIC),
        ("tcu/+/status", RefusalReason.BAD_TOPIC),
        ("tcu//status", RefusalReason.BAD_TOPIC),
        ("app/#/requests", RefusalReason.BAD_TOPIC),
        ("app/$sys/requests", RefusalReason.BAD_TOPIC),
        ("app/a\x00b/requests", RefusalReason.BAD_TOPIC),
        ("tcu/VSSZZZKLZMR01234/status", RefusalReason.BAD_VIN),
        ("sim/vsszzzklzmr012345/control", RefusalReason.BAD_VIN),
    ],
)
def test_parse_refuses(topic: str, reason: RefusalReason) -> None:
    with pytest.raises(ProtocolError) as info:
        TOPICS.parse(topic)
    assert info.value.reason is reason


def test_parse_refuses_topics_without_the_prefix() -> None:
    with pytest.raises(ProtocolError, match="lacks prefix"):
        Topics("p").parse(f"tcu/{VIN}/status")


CAR_BUILDERS: list[Callable[[str], str]] = [
    TOPICS.status,
    TOPICS.events,
    TOPICS.commands,
    TOPICS.results,
    TOPICS.connection,
    TOPICS.control,
]
APP_BUILDERS: list[Callable[[str], str]] = [TOPICS.app_requests, TOPICS.app_responses, TOPICS.app_events]


@given(
    level=st.builds(
        lambda a, bad, b: a + bad + b,
        st.text(max_size=10),
        st.sampled_from(["+", "#", "/", "\x00"]),
        st.text(max_size=10),
    )
    | st.just(""),
    builder=st.sampled_from(CAR_BUILDERS + APP_BUILDERS),
)
def test_builders_refuse_levels_that_would_change_the_topic(level: str, builder: Callable[[str], str]) -> None:
    with pytest.raises(ProtocolError) as info:
        builder(level)
    assert info.value.reason is RefusalReason.BAD_TOPIC


@pytest.mark.parametrize("builder", CAR_BUILDERS)
def test_car_builders_refuse_bad_vins(builder: Callable[[str], str]) -> None:
    for vin in ("VSSZZZKLZMR01234", "VSSZZZKLZMR0123456", "VSSZZZKLZMO012345"):
        with pytest.raises(ProtocolError) as info:
            builder(vin)
        assert info.value.reason is RefusalReason.BAD_VIN


@pytest.mark.parametrize("client_id", ["$share", "a\nb", "x" * 129, "tab\there"])
def test_app_builders_refuse_odd_client_ids(client_id: str) -> None:
    for builder in APP_BUILDERS:
        with pytest.raises(ProtocolError) as info:
            builder(client_id)
        assert info.value.reason is RefusalReason.BAD_TOPIC


@given(st.text(max_size=40))
def test_parse_arbitrary_text_raises_only_protocol_error(topic: str) -> None:
    try:
        parsed = TOPICS.parse(topic)
    except ProtocolError:
        return
    assert topic == f"{parsed.root}/{parsed.key}/{parsed.kind.level}"


def test_connection_payloads() -> None:
    assert [s.value for s in ConnectionState] == ["online", "offline"]
