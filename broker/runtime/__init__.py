"""The cloud put together: registry, domain services and MQTT handler, built in one place (`open_cloud`)
for every way the cloud runs. See docs/architecture.md."""

from __future__ import annotations

from ._open import BrokerLogin, CloudKeys, CloudSite, cloud_handler, open_cloud, open_services

__all__ = ["BrokerLogin", "CloudKeys", "CloudSite", "cloud_handler", "open_cloud", "open_services"]
