"""Ed25519 on this machine: CPU time of one signature check with `cryptography` (OpenSSL) and with PyNaCl
(libsodium, what `tcu_sim.protocol.PublicKey.verify_signature` uses), and of one signature with each.

    .venv/bin/python -m tcu_sim.bench._verify --rounds 5000

CPU time (`time.process_time`), so the figures hold on a shared machine too; the message is a status-sized
300 bytes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import nacl.bindings
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

__all__ = ["ed25519_costs"]


def _cost_us(work: Callable[[], object], rounds: int) -> float:
    work()
    started = time.process_time()
    for _ in range(rounds):
        work()
    return (time.process_time() - started) / rounds * 1e6


def ed25519_costs(rounds: int = 5000) -> dict[str, float]:
    """Microseconds of CPU per operation, by library and operation."""
    key = Ed25519PrivateKey.generate()
    message = os.urandom(300)
    signature = key.sign(message)
    public = key.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    nacl_key = nacl.signing.SigningKey(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return {
        "cryptography.verify": _cost_us(lambda: public.verify(signature, message), rounds),
        "pynacl.verify": _cost_us(lambda: nacl.bindings.crypto_sign_open(signature + message, raw), rounds),
        "cryptography.sign": _cost_us(lambda: key.sign(message), rounds),
        "pynacl.sign": _cost_us(lambda: nacl_key.sign(message), rounds),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m tcu_sim.bench._verify`."""
    parser = argparse.ArgumentParser(prog="python -m tcu_sim.bench._verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args(argv)
    for name, us in ed25519_costs(args.rounds).items():
        print(f"{name:22s} {us:7.1f} µs CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
