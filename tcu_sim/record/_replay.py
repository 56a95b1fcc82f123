"""`replay`: run a recording's app and operator side against a fresh stack and report what came out differently.

    recording = read_recording(Path("run.jsonl.gz"))
    report = await replay(recording, ReplayOptions(cloud_overrides={"spin_max_tries": 2}))
    report.divergences          # [] when cars and cloud answered as recorded

The stack is a `LocalStack` of the recording's fleet file and seed in a throw-away state directory, on a
`VirtualClock` that starts where the recording started. The replay walks the recording in order: before each
input (an app request, an operator control) the clock is moved on to the input's recorded time and the input is
sent — with the secrets the recording left out put back (`_redact` says how) — and its answer awaited; before
moving on, every command the recording saw finish by then is awaited too (the clock moved to its recorded end,
so a `timed_out` happens at the same time). The replay's own traffic is recorded by a `Recorder` into memory,
and both recordings are compared (`_compare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import operator
import os
import re
import secrets
import ssl
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from broker.cloud import PasswordHasher
from broker.pki import OPERATOR, RECORDER
from tcu_sim._net import SOCKET_OPTIONS
from tcu_sim.clock import VirtualClock
from tcu_sim.fleet import FleetConfig, FleetConfigError, load_fleet
from tcu_sim.record._compare import FINAL_STATES, Divergence, Outcomes, compare
from tcu_sim.record._format import Recording
from tcu_sim.record._recorder import Recorder
from tcu_sim.record._redact import REDACTED, UserSecrets
from tcu_sim.stack import STACK_APP, TERMINAL_APP, BrokerChoice, LocalStack, StackConfig

__all__ = ["ReplayError", "ReplayOptions", "ReplayReport", "fleet_users", "plan_inputs", "replay"]

log = structlog.get_logger("tcu_sim.record.replay")

_SAFE_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SPARE_SPINS = ("2580", "1357", "8642", "9137", "4711", "3692")  # wrong guesses to stand in for a recorded one


class ReplayError(Exception):
    """A recording that cannot be replayed (a secret that cannot be put back, a missing fleet file): what and
    where (`line`, 1-based, when a line is to blame)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {problem}" if line is not None else problem)
        self.line = line


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: which fleet file (default: the recording's), the secrets of users not in it, changed
    rules of the cloud, and how long (real seconds) to wait for each answer."""

    fleet: Path | None = None
    secrets: Path | None = None
    """A JSON side file `{"users": {"email": {"password": "...", "spin": "...."}}}` for users the fleet file lacks."""
    cloud_overrides: Mapping[str, Any] = field(default_factory=dict)
    broker: BrokerChoice = BrokerChoice.AUTO
    answer_timeout_s: float = 10.0
    settle_timeout_s: float = 5.0
    state_dir: Path | None = None
    """Where the fresh stack keeps its state (default: a temporary directory, removed afterwards)."""


@dataclass(slots=True)
class ReplayReport:
    """What the replay found."""

    divergences: list[Divergence]
    checked: list[str]
    inputs: int
    records: int
    """Messages the replay's own run produced."""

    @property
    def ok(self) -> bool:
        """No divergence."""
        return not self.divergences

    def text(self) -> str:
        """The human report."""
        lines = [f"replayed {self.inputs} inputs; compared {len(self.checked)} outcomes; "
                 f"{len(self.divergences)} divergence(s)"]
        lines += [f"  DIVERGED {d.text()}" for d in self.divergences]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Input:
    """One recorded input, ready to send (secrets still to fill in at send time: issued refs)."""

    record: Mapping[str, Any]
    kind: str  # requests | control
    key: str  # client id | VIN
    payload: dict[str, Any]


def fleet_users(fleet: FleetConfig, secrets_file: Path | None = None) -> list[UserSecrets]:
    """The users whose secrets a recording may refer to: the fleet file's, then the side file's."""
    users = [UserSecrets(u.email, u.password.get_secret_value(), u.spin.get_secret_value()) for u in fleet.users]
    if secrets_file is not None:
        try:
            data = json.loads(secrets_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReplayError(f"{secrets_file}: cannot read the secrets file: {type(exc).__name__}") from None
        entries = data.get("users") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise ReplayError(f'{secrets_file}: expected {{"users": {{"email": {{"password": ..., "spin": ...}}}}}}')
        for email, values in entries.items():
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise ReplayError(f"{secrets_file}: users.{email}: password and spin must be strings")
            users.append(UserSecrets(str(email), values.get("password"), values.get("spin")))
    return users


def plan_inputs(recording: Recording, users: Sequence[UserSecrets]) -> list[Input]:
    """The recording's inputs with the user secrets put back; ReplayError (with the line) for one that cannot."""
    by_email = {u.email.lower(): u for u in users}
    inputs: list[Input] = []
    for record in recording.records:
        kind = record["kind"]
        if kind not in ("requests", "control") or record.get("retained"):
            continue
        msg = record.get("msg")
        if not isinstance(msg, dict):
            raise ReplayError(f"the {kind} on {record['key']} could not be decoded: cannot send it", record["line"])
        if kind == "requests" and not _SAFE_CLIENT.fullmatch(record["key"]):
            raise ReplayError(f"app client id {record['key']!r} cannot be an app login of the replay", record["line"])
        payload = json.loads(json.dumps(msg))  # a deep copy
        where = "params"
        holder = payload.get(where) if isinstance(payload.get(where), dict) else None
        for path, what in (record.get("secrets") or {}).items():
            name = path.split(".", 1)[1]
            if holder is None:
                raise ReplayError(f"{path} is redacted but the message has no {where}", record["line"])
            holder[name] = _restore(record, name, what, by_email)
        inputs.append(Input(record, kind, record["key"], payload))
    return inputs


def _restore(record: Mapping[str, Any], name: str, what: Any, by_email: Mapping[str, UserSecrets]) -> str:
    user_email = record.get("user")
    user = by_email.get(user_email.lower()) if isinstance(user_email, str) else None
    is_spin = name.endswith("spin")
    own = None if user is None else (user.spin if is_spin else user.password)
    if own is None:
        who = f"user {user_email}" if isinstance(user_email, str) else "an unknown user"
        raise ReplayError(
            f"the {name} of {who} is redacted and not in the fleet file: give it in a secrets file "
            f'(--secrets FILE: {{"users": {{"{user_email or "EMAIL"}": {{"password": ..., "spin": ...}}}}}})',
            record["line"],
        )
    if what in ("fleet", "unknown"):
        return own
    if isinstance(what, dict) and what.get("class") == "other":
        if is_spin and what.get("shape") == "digits4":
            return next(s for s in _SPARE_SPINS if s != own)
        return own + "-not-it"  # a wrong password (or a malformed S-PIN): any other value answers the same
    raise ReplayError(f"{name}: unknown secret class {what!r}", record["line"])


class _MemorySink:
    """The replay's own recording, in memory, with a way to wait for a record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.outcomes = Outcomes()
        self._pulse = asyncio.Event()

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.outcomes.add(record)
        self._pulse.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once `predicate()` holds, False after `timeout` real seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._pulse.clear()
                    await self._pulse.wait()
        except TimeoutError:
            return predicate()
        return True


class _Driver:
    """The replay's app clients (one per recorded client id, on the app listener) and its operator."""

    def __init__(self, stack: LocalStack, options: ReplayOptions) -> None:
        self.stack = stack
        self.options = options
        self.apps: dict[str, aiomqtt.Client] = {}
        self.answers: dict[tuple[str, str], dict[str, Any]] = {}
        self.answered = asyncio.Event()
        self.issued: dict[str, str] = {}  # label (s1, p1, e1) -> the value the replay's cloud issued
        self._exit = contextlib.AsyncExitStack()
        self._operator: aiomqtt.Client | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        await self._exit.aclose()

    async def app(self, client_id: str) -> aiomqtt.Client:
        client = self.apps.get(client_id)
        if client is not None:
            return client
        endpoint = self.stack.broker.app(client_id)
        if endpoint is None or endpoint.username != client_id:
            raise ReplayError(f"the replay's broker has no app login {client_id!r}")
        tls = self.stack.pki.client_ssl_context(None) if endpoint.tls else None
        client = aiomqtt.Client(
            endpoint.host, endpoint.port, identifier=client_id, username=client_id, password=endpoint.password,
            tls_context=tls, clean_session=True, timeout=self.options.answer_timeout_s, socket_options=SOCKET_OPTIONS,
        )
        await self._exit.enter_async_context(client)
        await client.subscribe(self.stack.topics.app_responses(client_id), qos=1)
        self.apps[client_id] = client
        self._readers.append(asyncio.create_task(self._read(client_id, client), name=f"replay.app[{client_id}]"))
        return client

    async def _read(self, client_id: str, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                msg = json.loads(message.payload) if isinstance(message.payload, bytes | bytearray) else None
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                self.answers[(client_id, msg["id"])] = msg
                self.answered.set()

    async def operator(self) -> aiomqtt.Client:
        if self._operator is None:
            pki = self.stack.pki
            await asyncio.to_thread(pki.ensure_operator)
            broker = self.stack.broker.device
            client = aiomqtt.Client(
                broker.host, broker.port, identifier=OPERATOR,
                tls_context=pki.client_ssl_context(OPERATOR) if broker.tls else None, clean_session=True,
                timeout=self.options.answer_timeout_s, socket_options=SOCKET_OPTIONS,
            )
            await self._exit.enter_async_context(client)
            self._operator = client
        return self._operator

    async def wait_answer(self, client_id: str, request_id: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self.options.answer_timeout_s):
                while (client_id, request_id) not in self.answers:
                    self.answered.clear()
                    await self.answered.wait()
        except TimeoutError:
            return None
        return self.answers[(client_id, request_id)]


def _at(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
    return obj


_MAIL_CODE = re.compile(r"code[=:]?\s*([A-Za-z0-9_-]{6,})")


def _learn(driver: _Driver, recorded: Mapping[str, Any] | None, answer: Mapping[str, Any]) -> None:
    """Take the values the replay's cloud issued where the recording says it issued some (`defines`)."""
    if recorded is None:
        return
    for path, label in (recorded.get("defines") or {}).items():
        value = _at(answer, path)
        if not isinstance(value, str):
            continue
        if isinstance(label, list):  # codes inside a mail body, in order
            for one, code in zip(label, _MAIL_CODE.findall(value), strict=False):
                driver.issued[one] = code
        else:
            driver.issued[str(label)] = value


def _fill_refs(payload: dict[str, Any], record: Mapping[str, Any], driver: _Driver) -> None:
    session = record.get("session")
    if payload.get("token") == REDACTED:
        # A session the recording saw being opened gets the replay's token of that login; any other one (opened
        # before the recording started) cannot be had: a token no cloud issued stands in (the answer will say).
        payload["token"] = driver.issued.get(session, "replay-unknown-session") if isinstance(session, str) else (
            "replay-unknown-session"
        )
    for path, label in (record.get("refs") or {}).items():
        where, name = path.split(".", 1)
        holder = payload.get(where)
        if isinstance(holder, dict) and label in driver.issued:
            holder[name] = driver.issued[label]


async def replay(recording: Recording, options: ReplayOptions | None = None) -> ReplayReport:
    """Replay `recording` against a fresh stack (module docstring); ReplayError when it cannot be replayed,
    StackError when the stack does not start."""
    options = options or ReplayOptions()
    header = recording.header
    fleet_path = options.fleet or (Path(header.fleet) if header.fleet else None)
    if fleet_path is None:
        raise ReplayError("the recording names no fleet file: give one with --fleet")
    try:
        fleet = load_fleet(fleet_path)
    except FleetConfigError as exc:
        raise ReplayError(str(exc)) from None
    if header.seed is not None and fleet.seed != header.seed:
        fleet = fleet.model_copy(update={"seed": header.seed})
    users = fleet_users(fleet, options.secrets)
    inputs = plan_inputs(recording, users)
    recorded = Outcomes.of(recording.records)
    clients = sorted({i.key for i in inputs if i.kind == "requests"})
    async with _state_dir(options.state_dir) as state:
        _write_logins(state, clients)
        config = StackConfig(
            state_dir=state, broker=options.broker, port=0, app_port=0, port_fallback=False,
            cloud_overrides=dict(options.cloud_overrides),
            # Transport faults are not replayed (see docs/record-replay.md), and a profile's latency on the fault
            # proxy would only slow the replay's answers down in real time while its clock is virtual.
            fault_proxy=False,
        )
        clock = VirtualClock(start=header.virtual_started_at)
        # A throw-away stack: cheap password hashing changes no answer, only how long a login takes.
        async with LocalStack(fleet, config, clock=clock, passwords=PasswordHasher.for_tests()) as stack:
            sink = _MemorySink()
            pki = stack.pki
            await asyncio.to_thread(pki.ensure_identity, RECORDER)
            device = stack.broker.device
            tls: ssl.SSLContext | None = pki.client_ssl_context(RECORDER) if device.tls else None
            async with Recorder(device, tls, sink=sink, clock=clock, users=users,
                                topic_prefix=fleet.topic_prefix) as recorder:
                await recorder.wait_ready(options.answer_timeout_s)
                driver = _Driver(stack, options)
                try:
                    await _walk(recording, inputs, recorded, driver, sink, clock, options)
                finally:
                    await driver.close()
            divergences, checked = compare(recorded, sink.outcomes)
            return ReplayReport(divergences, checked, len(inputs), len(sink.records))


async def _walk(
    recording: Recording,
    inputs: Sequence[Input],
    recorded: Outcomes,
    driver: _Driver,
    sink: _MemorySink,
    clock: VirtualClock,
    options: ReplayOptions,
) -> None:
    start_rec = recording.header.virtual_started_at
    start_rep = clock.now()
    command_map: dict[str, str] = {}  # recorded command id -> the replay's
    finals = sorted(
        ((line, cid) for cid, (state, line) in recorded.cloud_state.items() if state.split(" ")[0] in FINAL_STATES),
    )
    vt_of_line = {int(r["line"]): float(r["vt"]) for r in recording.records}
    done = 0
    sent = [(int(r["line"]), key) for r in recording.records if (key := _sent_key(r)) is not None]
    needed: Counter[tuple[str, str]] = Counter()
    sent_done = 0

    async def advance_to(vt: float) -> None:
        target = start_rep + (vt - start_rec)
        if target > clock.now():
            await clock.advance(target - clock.now())

    async def settle(before_line: int) -> None:
        """Every command the recording saw finish before `before_line` finishes in the replay too."""
        nonlocal done, sent_done
        while done < len(finals) and finals[done][0] < before_line:
            line, recorded_id = finals[done]
            done += 1
            await advance_to(vt_of_line[line])
            replayed_id = command_map.get(recorded_id)
            if replayed_id is None:
                continue

            def final(cid: str = replayed_id) -> bool:
                got = sink.outcomes.cloud_state.get(cid)
                return got is not None and got[0].split(" ")[0] in FINAL_STATES

            await sink.wait_for(final, options.answer_timeout_s)
        # Commands the cloud sent cars by then (an enrolment's confirmation on the infotainment, say) are sent in
        # the replay too: they mark the cloud's work an input may depend on.
        while sent_done < len(sent) and sent[sent_done][0] < before_line:
            needed[sent[sent_done][1]] += 1
            sent_done += 1
        if needed:
            await sink.wait_for(
                lambda: all(sink.outcomes.sent[key] >= n for key, n in needed.items()), options.answer_timeout_s
            )

    responses = {(r["key"], r["msg"].get("id")): r for r in recording.records
                 if r["kind"] == "responses" and isinstance(r.get("msg"), dict)}
    for item in inputs:
        line = int(item.record["line"])
        await settle(line)
        await advance_to(float(item.record["vt"]))
        payload = json.loads(json.dumps(item.payload))
        _fill_refs(payload, item.record, driver)
        params = payload.get("params")
        if isinstance(params, dict) and params.get("command_id") in command_map:
            params["command_id"] = command_map[params["command_id"]]  # the replay's command of that request
        body = json.dumps(payload, separators=(",", ":")).encode()
        if item.kind == "requests":
            client = await driver.app(item.key)
            await client.publish(driver.stack.topics.app_requests(item.key), body, qos=1)
            request_id = str(payload.get("id"))
            answer = await driver.wait_answer(item.key, request_id)
            if answer is None:
                log.warning("replay.no_answer", line=line, client=item.key, request=request_id)
                continue
            recorded_answer = responses.get((item.key, request_id))
            _learn(driver, recorded_answer, answer)
            recorded_id = recorded.command_of.get((item.key, request_id))
            result = answer.get("result")
            if recorded_id is not None and isinstance(result, dict) and isinstance(result.get("command_id"), str):
                command_map[recorded_id] = result["command_id"]
        else:
            op_client = await driver.operator()
            await op_client.publish(driver.stack.topics.control(item.key), body, qos=1)
            control_id = payload.get("id")
            if isinstance(control_id, str) and (item.key, control_id) in recorded.controls:
                answered = functools.partial(operator.contains, sink.outcomes.controls, (item.key, control_id))
                await sink.wait_for(answered, options.answer_timeout_s)
    await settle(10**12)
    if recording.records:
        await advance_to(float(recording.records[-1]["vt"]))
    expected = recorded.status

    def statuses_match() -> bool:
        return all(
            vin in sink.outcomes.status and sink.outcomes.status[vin][0] == fields
            for vin, (fields, _) in expected.items()
        )

    await sink.wait_for(statuses_match, options.settle_timeout_s)
    # The replay's recorder sees the answers a moment after the app clients did: compare once it has them all.
    got = list(driver.answers)
    await sink.wait_for(lambda: all(k in sink.outcomes.responses for k in got), options.answer_timeout_s)


def _sent_key(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(VIN, op) of a command the cloud sent a car, as `Outcomes.sent` counts it."""
    if record["kind"] != "commands":
        return None
    probe = Outcomes()
    probe.add(record)
    return next(iter(probe.sent), None)


@contextlib.asynccontextmanager
async def _state_dir(given: Path | None) -> AsyncIterator[Path]:
    if given is not None:
        if await asyncio.to_thread(lambda: given.exists() and any(given.iterdir())):
            raise ReplayError(f"{given}: the replay needs an empty state directory (a fresh stack)")
        await asyncio.to_thread(given.mkdir, parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="tcu-sim-replay-") as tmp:
        yield Path(tmp)


def _write_logins(state: Path, clients: Sequence[str]) -> None:
    """App logins for every recorded app client id: the stack gives its broker every login of this file."""
    logins = {name: secrets.token_urlsafe(18) for name in (STACK_APP, TERMINAL_APP, *clients)}
    fd = os.open(state / "app-logins.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(logins, file, indent=2)
