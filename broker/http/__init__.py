"""The cloud's app API over HTTP (SPEC §8, issue 15): the operations of §2.5 under `/api/v1/`, an OpenAPI 3.1
document at `/openapi.json`, errors as `application/problem+json`, push events as Server-Sent Events.

    api = HttpApi(cloud)                                  # cloud: the running CloudHandler (broker.runtime)
    async with serve_http(api.app, "127.0.0.1", 8080) as server:
        print(server.url)

Every route runs the cloud's own `AppRequests.dispatch`, as an MQTT app request would (see `_api`).
"""

from __future__ import annotations

from ._api import HTTP_CLIENT_ID, ApiConfig, HttpApi, problem_response
from ._events import LoggedEvent, UserEventLog
from ._limits import BodyLimit, RateLimit
from ._models import ERROR_STATUS, Problem
from ._serve import HttpServer, is_loopback, serve_http

__all__ = [
    "ERROR_STATUS",
    "HTTP_CLIENT_ID",
    "ApiConfig",
    "BodyLimit",
    "HttpApi",
    "HttpServer",
    "LoggedEvent",
    "Problem",
    "RateLimit",
    "UserEventLog",
    "is_loopback",
    "problem_response",
    "serve_http",
]
