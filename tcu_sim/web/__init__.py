"""The web dashboard of `tcu-sim up` (SPEC §8): a map of the fleet, a table of cars, the live command trace and
fault controls, served at `/` beside the cloud's HTTP app API (`broker.http`).

    api = HttpApi(stack.cloud)
    dashboard = Dashboard(stack, api)                # operator_token=... to bind beyond loopback
    async with serve_http(dashboard.app, "127.0.0.1", 8080) as server:
        print(server.url)

Leaflet 1.9.4 ships inside the package (`static/vendor/leaflet`, BSD-2-Clause); the server fetches nothing.
"""

from __future__ import annotations

from ._dashboard import MAP_LIMIT, Dashboard

__all__ = ["MAP_LIMIT", "Dashboard"]
