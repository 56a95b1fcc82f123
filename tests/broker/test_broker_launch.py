"""broker.launch: which broker runs, decided once for the stack and the test harness."""

from __future__ import annotations

from pathlib import Path

import pytest

import tcu_sim
import tcu_sim.stack
import tcu_sim.testing
from broker.launch import BrokerChoice, BrokerKind, BrokerSelection, select_broker
from broker.mosquitto import MosquittoNotFound


@pytest.fixture
def no_mosquitto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TCU_SIM_MOSQUITTO", str(tmp_path / "no-such-mosquitto"))


@pytest.fixture
def fake_mosquitto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    binary = tmp_path / "mosquitto"
    binary.write_text("#!/bin/sh\n", encoding="utf-8")
    binary.chmod(0o755)
    monkeypatch.setenv("TCU_SIM_MOSQUITTO", str(binary))
    return binary


def test_auto_picks_mosquitto_when_its_binary_is_found(fake_mosquitto: Path) -> None:
    assert select_broker("auto") == BrokerSelection(BrokerKind.MOSQUITTO, binary=fake_mosquitto)
    assert select_broker(BrokerChoice.MOSQUITTO).binary == fake_mosquitto


@pytest.mark.usefixtures("no_mosquitto")
def test_auto_falls_back_to_the_embedded_broker_without_mosquitto() -> None:
    assert select_broker(BrokerChoice.AUTO) == BrokerSelection(BrokerKind.EMBEDDED, fallback=True)


@pytest.mark.usefixtures("no_mosquitto")
def test_mosquitto_by_name_without_its_binary_says_how_to_install_it() -> None:
    with pytest.raises(MosquittoNotFound, match="TCU_SIM_MOSQUITTO"):
        select_broker("mosquitto")


@pytest.mark.usefixtures("fake_mosquitto")
def test_embedded_by_name_is_embedded_even_with_mosquitto_installed() -> None:
    assert select_broker(BrokerKind.EMBEDDED) == BrokerSelection(BrokerKind.EMBEDDED)


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:1883", "mqtts://broker.example:8883"])
def test_a_url_is_an_external_broker(url: str) -> None:
    assert select_broker(url) == BrokerSelection(BrokerKind.EXTERNAL, url=url)
    assert select_broker(BrokerChoice.EXTERNAL, url=url) == BrokerSelection(BrokerKind.EXTERNAL, url=url)


def test_an_unknown_choice_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, mosquitto, embedded, external"):
        select_broker("rabbitmq")


def test_the_stack_and_the_harness_share_one_broker_kind() -> None:
    assert tcu_sim.stack.BrokerKind is BrokerKind
    assert tcu_sim.testing.BrokerKind is BrokerKind
    assert tcu_sim.BrokerKind is BrokerKind
    assert tcu_sim.stack.BrokerChoice is BrokerChoice
