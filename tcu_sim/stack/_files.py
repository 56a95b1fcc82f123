"""Files the stack keeps in its state directory between runs (all written 0600, replaced atomically).

- `app-logins.json`: the MQTT logins of the app listener of a broker the stack starts (username → password),
  generated on the first run and kept, so the app session file of the second terminal stays valid;
- `app-session.json`: a session file for `tcu-sim app --session ...` holding the app listener's URL and login
  (and, once the user logged in there, their session token), and a `pool` of further logins so that several
  `tcu-sim app` processes can run at once, each on a login (= client id) of its own;
- `cloud/server.secret`: the cloud's server secret, the same file `tcu-sim cloud run` uses.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tcu_sim.stack._errors import StackError

__all__ = ["load_app_logins", "load_server_secret", "write_app_session", "write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only, through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(tmp, 0o600)  # an existing temporary file keeps its mode through O_CREAT
    os.replace(tmp, path)


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise StackError(f"{path}: not a JSON object")
    return data


def load_app_logins(path: Path, usernames: Iterable[str]) -> dict[str, str]:
    """The app logins in `path`, adding a random password for each missing username (and saving them)."""
    data = _read_json_object(path) or {}
    logins = {str(k): v for k, v in data.items() if isinstance(v, str) and v}
    missing = [name for name in usernames if name not in logins]
    for name in missing:
        logins[name] = secrets.token_urlsafe(18)
    if missing:
        write_private(path, (json.dumps(logins, indent=2) + "\n").encode())
    return logins


def write_app_session(
    path: Path, *, broker: str, username: str, mqtt_password: str | None, pool: Mapping[str, str | None] | None = None
) -> None:
    """Point the session file at `broker` with this login; a session token already in it is kept while the
    broker and username stay the same (the user stays logged in across runs). `pool`: more logins of the same
    listener (username → password), of which each `tcu-sim app` process leases one that no other one holds."""
    data = _read_json_object(path) or {}
    if data.get("broker") != broker or data.get("username") != username:
        data = {key: value for key, value in data.items() if key not in ("token", "email")}
    data.update({"broker": broker, "username": username})
    if mqtt_password is None:
        data.pop("mqtt_password", None)
    else:
        data["mqtt_password"] = mqtt_password
    if pool:
        data["pool"] = dict(pool)
    else:
        data.pop("pool", None)
    write_private(path, (json.dumps(data, indent=2) + "\n").encode())


def load_server_secret(path: Path) -> bytes:
    """The cloud's server secret (the S-PIN and pairing-code HMAC key), created (32 random bytes) when missing;
    the same file and format as `tcu-sim cloud run`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = secrets.token_bytes(32)
        write_private(path, data)
        return data
    except OSError as exc:
        raise StackError(f"{path}: cannot read the server secret: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise StackError(f"{path}: the server secret must have at least 16 bytes")
    return data

