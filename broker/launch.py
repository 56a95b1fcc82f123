"""Which broker to run: Mosquitto, the embedded (amqtt) broker, or one somebody else runs — and how "auto" picks.

    selected = select_broker("auto")                   # Mosquitto when its binary is found, else the embedded one
    selected = select_broker("mqtts://127.0.0.1:8883")  # a broker somebody else runs
    selected.kind, selected.binary, selected.url, selected.fallback

The local stack (`tcu-sim up`) and the test harness (`Sandbox`, the pytest plugin's `--tcu-broker`) both decide
here, so "auto" means the same everywhere. Starting the chosen broker stays with each of them (the stack runs it
in its own event loop, the harness in a thread of its own); both start Mosquitto with `broker.mosquitto`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from broker.mosquitto import MosquittoNotFound, find_mosquitto

__all__ = ["BrokerChoice", "BrokerKind", "BrokerSelection", "select_broker"]


class BrokerKind(StrEnum):
    """Which broker runs."""

    MOSQUITTO = "mosquitto"
    EMBEDDED = "embedded"
    EXTERNAL = "external"


class BrokerChoice(StrEnum):
    """Which broker was asked for: a `BrokerKind`, or `auto`."""

    AUTO = "auto"  # Mosquitto when its binary is installed, else the embedded one
    MOSQUITTO = "mosquitto"
    EMBEDDED = "embedded"
    EXTERNAL = "external"  # a broker somebody else runs, at a URL; nobody starts one


@dataclass(frozen=True, slots=True)
class BrokerSelection:
    """The outcome of `select_broker`: the kind to run and what running it needs."""

    kind: BrokerKind
    binary: Path | None = None
    """The mosquitto binary (MOSQUITTO only)."""
    url: str | None = None
    """The broker's URL (EXTERNAL only; None when the choice named no URL: the caller says what is missing)."""
    fallback: bool = False
    """True when `auto` found no Mosquitto and chose the embedded broker."""


def select_broker(choice: BrokerChoice | BrokerKind | str, *, url: str | None = None) -> BrokerSelection:
    """Resolve `choice` — `auto`, `mosquitto`, `embedded`, `external` (with `url`), or an `mqtt://` / `mqtts://`
    URL, which means external — to the broker to run.

    Raises MosquittoNotFound when Mosquitto is asked for by name and its binary is missing (see
    `find_mosquitto`), and ValueError for a choice that is none of these.
    """
    text = str(choice)
    if "://" in text:
        return BrokerSelection(BrokerKind.EXTERNAL, url=text)
    try:
        asked = BrokerChoice(text)
    except ValueError:
        raise ValueError(
            f"broker {text!r}: expected {', '.join(BrokerChoice)}, mqtt://host:port or mqtts://host:port"
        ) from None
    if asked is BrokerChoice.EXTERNAL:
        return BrokerSelection(BrokerKind.EXTERNAL, url=url)
    if asked is BrokerChoice.EMBEDDED:
        return BrokerSelection(BrokerKind.EMBEDDED)
    binary = find_mosquitto()
    if binary is not None:
        return BrokerSelection(BrokerKind.MOSQUITTO, binary=binary)
    if asked is BrokerChoice.AUTO:
        return BrokerSelection(BrokerKind.EMBEDDED, fallback=True)
    raise MosquittoNotFound
