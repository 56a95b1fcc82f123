"""Who may read and write which topic (SPEC §2.1, §7), as data: rendered into Mosquitto ACL files, and evaluated
in Python by the embedded broker's topic plugin.

Two listeners, two ACLs:

- the **device** listener (mutual TLS, username = certificate CN). Cars get `pattern` lines with `%u`, so each car
  writes only `tcu/<its VIN>/status|events|results|connection` and `sim/<its VIN>/control/results` (its replies
  to operator controls) and reads only `tcu/<its VIN>/commands` and `sim/<its VIN>/control`. `%u` is safe
  because the fleet PKI only issues CNs that are VINs or lower-case names without `+`, `#` or `/` (see
  `broker.pki`). Mosquitto applies pattern lines to every user of the listener, so `cloud` also "owns"
  `tcu/cloud/...`; no car can be called that, so the grant is inert.
  `cloud` reads every car's status, events, results and connection topics, writes every car's commands, reads
  `app/+/requests` and writes `app/+/responses` and `app/+/events`; so do `cloud-2` ... `cloud-<clouds>`, one
  identity per cloud process (the client id is the CN, so two processes cannot share one).
  `operator` writes `sim/#` (simulator control and faults), reads the cars' replies `sim/+/control/results`
  and reads `tcu/+/connection` for the live view; it reads nothing else (status, events and results are the
  cloud's to verify and show). `operator-2` ... `operator-8` have the same rights, one per operator tool
  running at once (`FleetPKI.lease_operator`).
  `recorder` (`tcu-sim record`, `up --record`) only reads: every car, app and control topic, nothing written.
  Mosquitto's ACL file has no wildcard user names, so every one of these identities gets its own `user` block.
- the **app** listener (TLS, username + password, no client certificate). An app reads `app/<username>/responses`
  and `app/<username>/events` and writes `app/<username>/requests`. The ACL uses `%u`, not `%c`, so an app cannot
  reach another app's topics by choosing a client id; the broker also forces the client id to the username
  (`use_username_as_clientid`), so the client id the cloud sees in the topic is always the authenticated username.

Nothing else is allowed: no identity except the cloud reads another car's topics, and nobody reads `$SYS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from broker.pki import OPERATOR_POOL, RECORDER, IdentityKind, cloud_identity, identity_kind, operator_identity
from tcu_sim.protocol import Topics

__all__ = [
    "USERNAME",
    "AclAction",
    "AclPolicy",
    "Grant",
    "GrantAccess",
    "ListenerKind",
    "filter_covers",
    "topic_matches",
]

USERNAME = "%u"  # Mosquitto's pattern placeholder for the client's username


class GrantAccess(StrEnum):
    """What a grant allows, as in Mosquitto's ACL file (`read` covers subscribing and receiving)."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"

    @property
    def reads(self) -> bool:
        """True for read and readwrite."""
        return self is not GrantAccess.WRITE

    @property
    def writes(self) -> bool:
        """True for write and readwrite."""
        return self is not GrantAccess.READ


class AclAction(StrEnum):
    """What a client tries to do with a topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class ListenerKind(StrEnum):
    """Which listener a client came in through: the two have separate ACLs."""

    DEVICE = "device"  # mutual TLS: cars, cloud, operator, named identities
    APP = "app"  # TLS + username/password: apps


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL line: `access` to `topic` (a filter; a level may be `%u`, the client's username)."""

    access: GrantAccess
    topic: str

    def resolve(self, username: str) -> Grant:
        """This grant with `%u` replaced by `username` (which must hold no `/`, `+` or `#`)."""
        if USERNAME not in self.topic:
            return self
        levels = [username if level == USERNAME else level for level in self.topic.split("/")]
        return Grant(self.access, "/".join(levels))


@dataclass(frozen=True)
class AclPolicy:
    """The broker's access rules under an optional topic prefix; `named` grants rights to named identities.

    `named` maps a certificate identity (a lower-case name issued by `FleetPKI.issue_identity`) to its grants,
    e.g. a monitoring tool `{"monitor": (Grant(GrantAccess.READ, "tcu/+/connection"),)}`. Without an entry a
    named identity can do nothing beyond the inert car patterns. `clouds` is how many cloud processes may run
    at once: `cloud`, `cloud-2` ... `cloud-<clouds>` get the cloud's rights.
    """

    prefix: str = ""
    named: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)
    clouds: int = 8

    def __post_init__(self) -> None:
        # Validate the prefix the way the protocol does, and normalise it ("a/b/" -> "a/b").
        object.__setattr__(self, "prefix", Topics(self.prefix).prefix)
        if not 1 <= self.clouds <= 256:
            raise ValueError(f"clouds must be 1..256, got {self.clouds}")
        for name in self.named:
            if identity_kind(name) is not IdentityKind.NAMED:
                raise ValueError(f"named grants are for named identities, not {name!r}")

    def _t(self, topic: str) -> str:
        return f"{self.prefix}/{topic}" if self.prefix else topic

    # --- the rules
    @property
    def car_grants(self) -> tuple[Grant, ...]:
        """Pattern grants for cars (`%u` = the car's VIN)."""
        w, r = GrantAccess.WRITE, GrantAccess.READ
        return (
            Grant(w, self._t("tcu/%u/status")),
            Grant(w, self._t("tcu/%u/events")),
            Grant(w, self._t("tcu/%u/results")),
            Grant(w, self._t("tcu/%u/connection")),
            Grant(r, self._t("tcu/%u/commands")),
            Grant(r, self._t("sim/%u/control")),
            Grant(w, self._t("sim/%u/control/results")),
        )

    @property
    def cloud_grants(self) -> tuple[Grant, ...]:
        """What the cloud (CN `cloud`) may do."""
        w, r = GrantAccess.WRITE, GrantAccess.READ
        return (
            Grant(r, self._t("tcu/+/status")),
            Grant(r, self._t("tcu/+/events")),
            Grant(r, self._t("tcu/+/results")),
            Grant(r, self._t("tcu/+/connection")),
            Grant(w, self._t("tcu/+/commands")),
            Grant(r, self._t("app/+/requests")),
            Grant(w, self._t("app/+/responses")),
            Grant(w, self._t("app/+/events")),
        )

    @property
    def operator_grants(self) -> tuple[Grant, ...]:
        """What the operator (CN `operator`) may do: simulator control, and connection state for the live view."""
        return (
            Grant(GrantAccess.WRITE, self._t("sim/#")),
            Grant(GrantAccess.READ, self._t("sim/+/control/results")),
            Grant(GrantAccess.READ, self._t("tcu/+/connection")),
        )

    @property
    def app_grants(self) -> tuple[Grant, ...]:
        """Pattern grants for apps on the app listener (`%u` = the app's username)."""
        return (
            Grant(GrantAccess.WRITE, self._t("app/%u/requests")),
            Grant(GrantAccess.READ, self._t("app/%u/responses")),
            Grant(GrantAccess.READ, self._t("app/%u/events")),
        )

    @property
    def recorder_grants(self) -> tuple[Grant, ...]:
        """What the recorder (CN `recorder`) may do: read every car, app and control topic; write nothing."""
        r = GrantAccess.READ
        return (
            *(Grant(r, self._t(f"tcu/+/{kind}")) for kind in ("status", "events", "commands", "results", "connection")),
            *(Grant(r, self._t(f"app/+/{kind}")) for kind in ("requests", "responses", "events")),
            Grant(r, self._t("sim/+/control")),
            Grant(r, self._t("sim/+/control/results")),
        )

    def user_grants(self) -> dict[str, tuple[Grant, ...]]:
        """Per-user grants of the device listener (the `user` blocks of its ACL file)."""
        clouds = {cloud_identity(n): self.cloud_grants for n in range(1, self.clouds + 1)}
        operators = {operator_identity(n): self.operator_grants for n in range(1, OPERATOR_POOL + 1)}
        return {**clouds, **operators, RECORDER: self.recorder_grants, **self.named}

    @property
    def cloud_identities(self) -> tuple[str, ...]:
        """Every identity with the cloud's rights: `cloud`, `cloud-2` ... `cloud-<clouds>`."""
        return tuple(cloud_identity(n) for n in range(1, self.clouds + 1))

    def grants_for(self, username: str, listener: ListenerKind) -> tuple[Grant, ...]:
        """Every grant that applies to `username` on `listener`, `%u` resolved (Mosquitto semantics: patterns
        apply to every user of the listener, user blocks to that user only)."""
        if listener is ListenerKind.APP:
            return tuple(g.resolve(username) for g in self.app_grants)
        patterns = tuple(g.resolve(username) for g in self.car_grants)
        return patterns + self.user_grants().get(username, ())

    def allows(self, username: str, listener: ListenerKind, action: AclAction, topic: str) -> bool:
        """Would the broker let `username` on `listener` do `action` on `topic` (a filter for SUBSCRIBE)?

        A subscription is allowed when every topic it can match is readable (stricter than Mosquitto 2.0, which
        grants any subscription and filters each message on delivery; the outcome for the client is the same).
        A shared subscription `$share/<group>/<filter>` is judged by its filter.
        """
        if not _is_safe_username(username):
            return False  # Mosquitto denies %u patterns for such names; deny everything, like it
        grants = self.grants_for(username, listener)
        if action is AclAction.SUBSCRIBE:
            topic_filter = _strip_share(topic)
            if topic_filter is None:
                return False
            return any(g.access.reads and filter_covers(g.topic, topic_filter) for g in grants)
        if "+" in topic or "#" in topic or topic.startswith("$"):
            return False  # not a topic name: nobody publishes to wildcards or broker topics
        if action is AclAction.PUBLISH:
            return any(g.access.writes and topic_matches(g.topic, topic) for g in grants)
        return any(g.access.reads and topic_matches(g.topic, topic) for g in grants)

    # --- Mosquitto ACL files
    def render_device_acl(self) -> str:
        """The ACL file of the device (mutual TLS) listener."""
        lines = [
            "# tcu-sim: ACL of the device listener (mutual TLS; username = certificate CN). Generated, do not edit.",
            "# Cars: only their own topics. %u is the CN, which broker.pki issues only as a VIN or a safe name.",
            *(f"pattern {g.access} {g.topic}" for g in self.car_grants),
        ]
        for user, grants in self.user_grants().items():
            lines += ["", f"user {user}", *(f"topic {g.access} {g.topic}" for g in grants)]
        return "\n".join(lines) + "\n"

    def render_app_acl(self) -> str:
        """The ACL file of the app (username + password) listener."""
        lines = [
            "# tcu-sim: ACL of the app listener (username + password). Generated, do not edit.",
            "# %u, not %c: an app reaches only app/<its username>/..., whatever client id it picks.",
            *(f"pattern {g.access} {g.topic}" for g in self.app_grants),
        ]
        return "\n".join(lines) + "\n"


def _is_safe_username(username: str) -> bool:
    return bool(username) and not any(c in username for c in "+#/\x00") and not username.startswith("$")


def _strip_share(topic_filter: str) -> str | None:
    if not topic_filter.startswith("$share/"):
        return None if topic_filter.startswith("$") else topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return parts[2]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching: does `topic` (a name) match `topic_filter` (which may hold `+` and a trailing `#`)?"""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def filter_covers(grant: str, requested: str) -> bool:
    """Is every topic matched by the filter `requested` also matched by the filter `grant`?"""
    grant_levels = grant.split("/")
    requested_levels = requested.split("/")
    for index, level in enumerate(grant_levels):
        if level == "#":
            return True
        if index >= len(requested_levels):
            return False
        wanted = requested_levels[index]
        if wanted == "#":
            return False  # the request reaches deeper or wider than this grant
        if level == "+":
            continue
        if wanted != level:  # includes wanted == "+": wider than a fixed level
            return False
    return len(grant_levels) == len(requested_levels)
