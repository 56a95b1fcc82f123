"""Record and replay (SPEC §8): a run's two-way traffic to a file, and that file's app and operator side
replayed against a fresh stack, with every place where cars or cloud answered differently.

    tcu-sim up --record run.jsonl.gz                  # or, beside a running stack: tcu-sim record run.jsonl.gz
    tcu-sim record show run.jsonl.gz                  # a timeline, one line per message
    tcu-sim replay run.jsonl.gz --junit replay.xml    # exit 1 on a divergence

- `_format`: the file (gzip JSON Lines, a version header), its writer and its checked reader;
- `_redact`: topic kinds, decoding (JWS claims unverified), and the secrets that never reach the file;
- `_recorder`: `Recorder`, the `recorder` MQTT identity's subscription, writing records to a sink;
- `_timeline`: `record show`;
- `_compare`: the outcomes of a run and their comparison (text and JUnit);
- `_replay`: the fresh stack on a virtual clock, the inputs sent at their recorded times.
"""

from __future__ import annotations

from ._compare import Divergence, Outcomes, compare, junit_xml
from ._format import FORMAT, VERSION, Header, Recording, RecordingError, RecordingWriter, read_recording
from ._recorder import Recorder, RecordSink, recorder_filters
from ._redact import REDACTED, Redactor, UserSecrets, classify_topic, decode_payload
from ._replay import ReplayError, ReplayOptions, ReplayReport, fleet_users, plan_inputs, replay
from ._stack import record_stack
from ._timeline import timeline

__all__ = [
    "FORMAT",
    "REDACTED",
    "VERSION",
    "Divergence",
    "Header",
    "Outcomes",
    "RecordSink",
    "Recorder",
    "Recording",
    "RecordingError",
    "RecordingWriter",
    "Redactor",
    "ReplayError",
    "ReplayOptions",
    "ReplayReport",
    "UserSecrets",
    "classify_topic",
    "compare",
    "decode_payload",
    "fleet_users",
    "junit_xml",
    "plan_inputs",
    "read_recording",
    "record_stack",
    "recorder_filters",
    "replay",
    "timeline",
]
