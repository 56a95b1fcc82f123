"""What a recorded message becomes in the file: its topic kind, its decoded form, and no secret.

Secrets are replaced by `REDACTED` before a record is written: passwords, S-PINs (app request params, the
infotainment login of a car event or an operator control), session tokens (requests, login responses), pairing
codes (add_vehicle responses, the code entered in a car) and e-mail verification codes (request params, mail
bodies). So that a replay can put the right values back, the record says what stood there without saying it:

- `user`: the CUPRA ID the message is about (from the login, the session, or an e-mail parameter);
- `secrets`: `{"params.spin": "fleet"}` — the value was that user's own from the fleet file; `"other"` — a
  different value (`shape` `digits4` or `text`: a wrong guess); `"unknown"` — the user is not in the fleet file;
- `refs` / `defines`: values the cloud issued during the recording (tokens, pairing codes, verification codes)
  get labels (`s1`, `p1`, `e1`): the output that issued one `defines` it at a path, an input that used it `refs`
  it. The values themselves live only in the recorder's memory while it runs.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tcu_sim.protocol import b64url_decode

__all__ = ["REDACTED", "Classified", "Redactor", "UserSecrets", "classify_topic", "decode_payload"]

REDACTED: Final = "<redacted>"

_PASSWORD_FIELDS: Final = ("password", "old_password", "new_password")
_SPIN_FIELDS: Final = ("spin", "old_spin", "new_spin")
#: Keys whose string value is a secret wherever they appear (a defensive sweep over every message).
_SECRET_KEYS: Final = frozenset({*_PASSWORD_FIELDS, *_SPIN_FIELDS, "pairing_code", "token"})
_MAIL_CODE: Final = re.compile(r"(code[=:]?\s*)([A-Za-z0-9_-]{6,})")
_DIGITS4: Final = re.compile(r"[0-9]{4}")
_MEMORY: Final = 100_000  # request -> user entries kept (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Classified:
    """A recorded topic: its kind (`_format.KINDS`) and key (VIN or app client id)."""

    kind: str
    key: str


def classify_topic(topic: str, prefix: str = "") -> Classified | None:
    """The kind and key of a tcu-sim topic (None for anything else)."""
    if prefix:
        head = prefix.rstrip("/") + "/"
        if not topic.startswith(head):
            return None
        topic = topic[len(head):]
    levels = topic.split("/")
    if len(levels) == 3:
        root, key, last = levels
        if root == "tcu" and last in ("status", "events", "commands", "results", "connection"):
            return Classified(last, key)
        if root == "app" and last in ("requests", "responses", "events"):
            return Classified("app_events" if last == "events" else last, key)
        if root == "sim" and last == "control":
            return Classified("control", key)
    if len(levels) == 4 and levels[0] == "sim" and levels[2:] == ["control", "results"]:
        return Classified("control_results", levels[1])
    return None


_SIGNED: Final = frozenset({"status", "events", "commands", "results"})


def decode_payload(kind: str, payload: bytes) -> dict[str, Any]:
    """The record fields for a payload: `jws: {header, claims}` (signed kinds; unverified: the receivers check
    the signature), `text` (connection), `msg` (JSON), or `undecodable: why` (its bytes are not kept)."""
    try:
        if kind in _SIGNED:
            parts = payload.split(b".")
            if len(parts) != 3:
                return {"undecodable": f"not a JWS compact serialization ({len(payload)} bytes)"}
            header = json.loads(b64url_decode(parts[0], "header"))
            claims = json.loads(b64url_decode(parts[1], "payload"))
            if not isinstance(header, dict) or not isinstance(claims, dict):
                return {"undecodable": "JWS header or claims not a JSON object"}
            return {"jws": {"header": header, "claims": claims}}
        if kind == "connection":
            return {"text": payload.decode("utf-8")[:64]}
        msg = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"undecodable": f"{type(exc).__name__}: {str(exc)[:120]}"}
    if not isinstance(msg, dict):
        return {"undecodable": f"JSON {type(msg).__name__}, not an object"}
    return {"msg": msg}


@dataclass(frozen=True, slots=True)
class UserSecrets:
    """A CUPRA ID's password and S-PIN as the fleet file (or a side file) gives them."""

    email: str
    password: str | None
    spin: str | None

    def __repr__(self) -> str:
        return f"UserSecrets({self.email!r}, ***)"


class Redactor:
    """Redacts records one after the other, remembering (in memory only) which secrets the cloud issued and
    which session belongs to whom. One per recording."""

    def __init__(self, users: Iterable[UserSecrets] = ()) -> None:
        self._users = {u.email.lower(): u for u in users}
        self._sessions: dict[str, tuple[str, str | None]] = {}  # token -> (label, email)
        self._issued: dict[str, str] = {}  # pairing / verification code -> label
        self._asked: OrderedDict[tuple[str, str], tuple[str, str | None]] = OrderedDict()  # (client, id) -> (op, user)
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Redactor(users={len(self._users)}, sessions={len(self._sessions)}, issued={len(self._issued)})"

    def _label(self, prefix: str) -> str:
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    # -- one record ------------------------------------------------------------------------------------------
    def redact(self, record: dict[str, Any]) -> dict[str, Any]:
        """Redact `record` in place (and return it)."""
        kind, key = record["kind"], record["key"]
        msg = record.get("msg")
        if kind == "requests" and isinstance(msg, dict):
            self._request(record, key, msg)
        elif kind == "responses" and isinstance(msg, dict):
            self._response(record, key, msg)
        elif kind == "control" and isinstance(msg, dict):
            self._control(record, msg)
        elif kind == "events" and "jws" in record:
            body = record["jws"]["claims"].get("body")
            if isinstance(body, dict):
                self._car_event(record, body)
        for value in (record.get("msg"), record.get("jws")):
            if value is not None:
                _sweep(value)
        return record

    def _request(self, record: dict[str, Any], client: str, msg: dict[str, Any]) -> None:
        op = msg.get("op") if isinstance(msg.get("op"), str) else None
        user: str | None = None
        token = msg.get("token")
        if isinstance(token, str) and token != REDACTED:
            session = self._sessions.get(token)
            if session is None:  # a session from before the recording: a label, but no user
                session = (self._label("x"), None)
                self._sessions[token] = session
            record["session"], user = session
            msg["token"] = REDACTED
        params = msg.get("params")
        if isinstance(params, dict):
            if op in ("login", "register") and isinstance(params.get("email"), str):
                user = params["email"]
            secrets = self._user_fields(params, user)
            code = params.get("code")
            if op == "verify_email" and isinstance(code, str):
                ref = self._issued.get(code)
                if ref is not None:
                    record.setdefault("refs", {})["params.code"] = ref
                params["code"] = REDACTED
            if secrets:
                record["secrets"] = secrets
        if user is not None:
            record["user"] = user
        if isinstance(msg.get("id"), str):
            self._asked[(client, msg["id"])] = (op or "?", user)
            while len(self._asked) > _MEMORY:
                self._asked.popitem(last=False)

    def _response(self, record: dict[str, Any], client: str, msg: dict[str, Any]) -> None:
        request_id = msg.get("id")
        asked = self._asked.get((client, request_id)) if isinstance(request_id, str) else None
        op, user = asked if asked is not None else (None, None)
        if user is not None:
            record["user"] = user
        if op is not None:
            record["op"] = op
        result = msg.get("result")
        if not isinstance(result, dict):
            return
        defines: dict[str, Any] = {}
        token = result.get("token")
        if isinstance(token, str) and token != REDACTED:
            email = result.get("email") if isinstance(result.get("email"), str) else user
            label = self._label("s")
            self._sessions[token] = (label, email)
            defines["result.token"] = label
            result["token"] = REDACTED
        code = result.get("pairing_code")
        if isinstance(code, str) and code != REDACTED:
            label = self._issued.get(code) or self._label("p")
            self._issued[code] = label
            defines["result.pairing_code"] = label
            result["pairing_code"] = REDACTED
        mails = result.get("mails")
        if isinstance(mails, list):
            for index, mail in enumerate(mails):
                if isinstance(mail, dict) and isinstance(mail.get("body"), str):
                    labels = self._mail_codes(mail)
                    if labels:
                        defines[f"result.mails.{index}.body"] = labels
        if defines:
            record["defines"] = defines

    def _mail_codes(self, mail: dict[str, Any]) -> list[str]:
        labels: list[str] = []

        def replace(match: re.Match[str]) -> str:
            code = match.group(2)
            label = self._issued.get(code) or self._label("e")
            self._issued[code] = label
            labels.append(label)
            return match.group(1) + REDACTED

        mail["body"] = _MAIL_CODE.sub(replace, mail["body"])
        return labels

    def _control(self, record: dict[str, Any], msg: dict[str, Any]) -> None:
        params = msg.get("params")
        if not isinstance(params, dict):
            return
        user = params.get("email") if isinstance(params.get("email"), str) else None
        if user is not None:
            record["user"] = user
        secrets = self._user_fields(params, user)
        if secrets:
            record["secrets"] = secrets
        code = params.get("code")
        if isinstance(code, str) and code != REDACTED:
            ref = self._issued.get(code)
            if ref is not None:
                record.setdefault("refs", {})["params.code"] = ref
            params["code"] = REDACTED

    def _car_event(self, record: dict[str, Any], body: dict[str, Any]) -> None:
        user = body.get("email") if isinstance(body.get("email"), str) else None
        if user is not None:
            record["user"] = user
        secrets = self._user_fields(body, user, where="body")
        if secrets:
            record["secrets"] = secrets
        code = body.get("pairing_code")
        if isinstance(code, str) and code in self._issued:
            record.setdefault("refs", {})["body.pairing_code"] = self._issued[code]

    def _user_fields(self, params: dict[str, Any], user: str | None, *, where: str = "params") -> dict[str, Any]:
        """Replace the password and S-PIN fields of `params` by REDACTED; what each one was, for a replay."""
        out: dict[str, Any] = {}
        known = self._users.get(user.lower()) if user is not None else None
        for name in (*_PASSWORD_FIELDS, *_SPIN_FIELDS):
            value = params.get(name)
            if not isinstance(value, str) or value == REDACTED:
                continue
            own = None if known is None else (known.spin if name in _SPIN_FIELDS else known.password)
            if own is None:
                what: Any = "unknown"
            elif value == own:
                what = "fleet"
            else:
                what = {"class": "other", "shape": "digits4" if _DIGITS4.fullmatch(value) else "text"}
            out[f"{where}.{name}"] = what
            params[name] = REDACTED
        return out


def _sweep(value: Any) -> None:
    """Redact every secret-named string and every code in a mail-like `body`, however deep (a safety net for
    fields this module does not know by name)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _SECRET_KEYS and isinstance(item, str) and item != REDACTED:
                value[key] = REDACTED
            elif key == "body" and isinstance(item, str):
                value[key] = _MAIL_CODE.sub(lambda m: m.group(1) + REDACTED, item)
            else:
                _sweep(item)
    elif isinstance(value, list):
        for item in value:
            _sweep(item)


def user_secrets_from(users: Mapping[str, Mapping[str, str]]) -> list[UserSecrets]:
    """`{email: {password, spin}}` (a side file's `users`) as UserSecrets."""
    return [UserSecrets(email, v.get("password"), v.get("spin")) for email, v in users.items()]


__all__ += ["user_secrets_from"]
