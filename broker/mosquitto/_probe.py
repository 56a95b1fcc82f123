"""A minimal MQTT 3.1.1 CONNECT over TCP or TLS, to ask a broker one question fast: would it let me in?

aiomqtt (through paho) reports a TLS alert from the broker — certificate revoked, expired, or missing — only as a
timeout after its full connect timeout. A test that a certificate is refused should fail for the right reason and
in milliseconds, and a broker's readiness check should not wait seconds either, so this probe speaks just enough
MQTT to read the CONNACK, and reports the TLS alert by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass

__all__ = ["ConnectOutcome", "probe_connect"]

_CONNECT = 0x10
_CONNACK = 0x20
_DISCONNECT = b"\xe0\x00"


@dataclass(frozen=True, slots=True)
class ConnectOutcome:
    """How a broker answered a CONNECT.

    `accepted` is True for CONNACK return code 0. A refusal carries the CONNACK `return_code` (5: not
    authorised), or the TLS alert the broker sent (`tls_error`, e.g. `SSLV3_ALERT_CERTIFICATE_REVOKED`), or only
    `detail` (connection closed, refused, timed out).
    """

    accepted: bool
    return_code: int | None = None
    tls_error: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.accepted:
            return "accepted"
        if self.return_code is not None:
            return f"refused: CONNACK return code {self.return_code}"
        return f"refused: {self.tls_error or self.detail}"


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
) -> bytes:
    """The bytes of an MQTT 3.1.1 CONNECT with clean session and a 30 s keep-alive; `will` is (topic, payload),
    sent with QoS 1 and no retain."""
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | 0x08  # will flag, will QoS 1
        payload += _string(will[0]) + _string(will[1])
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    body = variable + payload
    return bytes([_CONNECT]) + _remaining_length(len(body)) + body


async def probe_connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    client_id: str = "tcu-sim-probe",
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
    disconnect: bool = True,
    timeout: float = 5.0,
) -> ConnectOutcome:
    """Connect, send CONNECT, read the CONNACK, disconnect; say how the broker answered. Never raises for a
    refusal (only for programming errors).

    `will` = (topic, payload) sets a last will; with `disconnect=False` the connection is closed without an
    MQTT DISCONNECT, so the broker publishes that will (a client dropping off the network).
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, server_hostname=host if ssl_context is not None else None
            )
            writer.write(connect_packet(client_id, username=username, password=password, will=will))
            await writer.drain()
            header = await reader.readexactly(4)
            if header[0] != _CONNACK or header[1] != 2:
                return ConnectOutcome(False, detail=f"unexpected answer {header.hex()}")
            code = header[3]
            if code == 0:
                if disconnect:
                    writer.write(_DISCONNECT)
                    await writer.drain()
                return ConnectOutcome(True, return_code=0)
            return ConnectOutcome(False, return_code=code)
    except ssl.SSLError as exc:
        return ConnectOutcome(False, tls_error=exc.reason or type(exc).__name__, detail=str(exc))
    except asyncio.IncompleteReadError:
        return ConnectOutcome(False, detail="connection closed before CONNACK")
    except TimeoutError:
        return ConnectOutcome(False, detail=f"no answer within {timeout} s")
    except OSError as exc:
        return ConnectOutcome(False, detail=f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()
            # The broker may already have torn the connection down.
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
