"""The one error type of the wire protocol, and the reasons a message can be refused.

Every function of `tcu_sim.protocol` that is handed bad input raises `ProtocolError` and nothing else, so a
receiver needs exactly one `except` to refuse, log and count a message by its `reason`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ProtocolError", "RefusalReason"]


class RefusalReason(StrEnum):
    """Why a message, a topic or a VIN was refused (logged and counted by this value)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_TYPE = "wrong_type"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    DUPLICATE = "duplicate"
    BAD_TOPIC = "bad_topic"
    BAD_VIN = "bad_vin"


class ProtocolError(Exception):
    """Bad input on the wire: `reason` says which check refused it, `detail` what was wrong and where.

    The detail never carries secret material (keys, tokens, passwords): only names, sizes and positions. It is
    at most `MAX_DETAIL` characters, so that it always fits the `detail` of a result or an event.
    """

    MAX_DETAIL = 1000

    reason: RefusalReason
    detail: str

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        if len(detail) > self.MAX_DETAIL:
            detail = detail[: self.MAX_DETAIL - 1] + "…"
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __repr__(self) -> str:
        return f"ProtocolError({self.reason.value!r}, {self.detail!r})"
