"""What every fuzz target shares: its seed corpus, instrumentation, and the atheris entry point.

A target is run as `python fuzz/fuzz_<name>.py [libFuzzer args] [corpus dirs]`. When no corpus directory is
given, its seeds (real samples: the wire examples of tests/protocol/protocol_samples.py, the shipped
fleet_configs) are written to `.fuzz/corpus/<name>/` (or `$FUZZ_CORPUS_ROOT/<name>/`), which libFuzzer grows
with what it finds: each run starts from what the earlier ones reached.
Any exception a target does not list as its decoder's documented error is a crash: atheris prints the input
and the stack and exits non-zero (`make fuzz` and tests/fuzz fail on it).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parent.parent

# The wire samples live with the protocol tests (they are also the examples of docs/protocol.md).
sys.path.insert(0, str(ROOT / "tests" / "protocol"))


def instrumented() -> atheris.import_hook.HookManager:
    """Import the project's modules under coverage instrumentation (libraries run uninstrumented, at full speed)."""
    return atheris.instrument_imports(include=["tcu_sim", "broker", "protocol_samples"])


def mode_input(mode: int, payload: bytes) -> bytes:
    """A seed for a target whose first byte selects what it does with the rest."""
    return bytes([mode]) + payload


def collect(*factories: Callable[[], Iterable[Any]]) -> list[Any]:
    """The samples of every factory; one that fails (a sample the protocol no longer accepts) is reported and
    left out, so that a stale sample weakens the seed corpus instead of stopping the fuzzing."""
    samples: list[Any] = []
    for factory in factories:
        try:
            samples.extend(factory())
        except Exception as exc:
            print(f"fuzz: seed samples {factory.__name__} left out: {type(exc).__name__}", file=sys.stderr)
    return samples


def run(
    name: str, test_one_input: Callable[[bytes], None], seeds: Iterable[bytes], *, max_len: int | None = None
) -> None:
    """Fuzz `test_one_input` with libFuzzer's arguments from the command line, seeded with `seeds`; `max_len` is
    the default input size limit (libFuzzer's own default is 4096 bytes)."""
    argv = list(sys.argv)
    if max_len is not None and not any(arg.startswith("-max_len=") for arg in argv[1:]):
        argv.insert(1, f"-max_len={max_len}")
    if not [arg for arg in argv[1:] if not arg.startswith("-")]:
        corpus = Path(os.environ.get("FUZZ_CORPUS_ROOT") or ROOT / ".fuzz" / "corpus") / name
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # noqa: S324 - a file name, not security
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
