"""amqtt plugins that give the embedded broker as much of the Mosquitto set-up as amqtt allows.

`IdentityAuthPlugin` plays Mosquitto's `use_identity_as_username` and `password_file`: a client with a certificate
(already verified against the fleet CA and CRL during the TLS handshake) is the certificate's CN — whatever
username it sent — and is refused when its serial is revoked now (checked per connection, so a revocation needs
no restart); a client without a certificate must log in as an app with a `$7$` password. It also refuses what
Mosquitto would block or ignore later and amqtt would let through: a certificate holder whose client id is not
its CN (SPEC §7: Mosquitto forces the id to the CN, amqtt cannot, so it refuses — before any session is looked
up, so the owner of that client id keeps its connection and session), an app whose client id is not its
username, and a last will on a topic the client may not publish to.

`AclTopicPlugin` evaluates the same `AclPolicy` as the Mosquitto ACL files for PUBLISH, SUBSCRIBE and delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from cryptography import x509
from cryptography.x509.oid import NameOID

from broker.mosquitto import AclAction, AclPolicy, ListenerKind, verify_password
from broker.pki import FleetPKI, IdentityKind, InvalidIdentityName, identity_kind

__all__ = ["AclTopicPlugin", "IdentityAuthPlugin", "SecurityState"]

_log = logging.getLogger(__name__)

LISTENER_ATTRIBUTE = "tcu_sim.listener"

_ACTIONS = {Action.PUBLISH: AclAction.PUBLISH, Action.SUBSCRIBE: AclAction.SUBSCRIBE, Action.RECEIVE: AclAction.RECEIVE}


@dataclass
class SecurityState:
    """What both plugins share: the policy, the PKI (for live revocation) and the app password hashes."""

    policy: AclPolicy
    pki: FleetPKI | None = None
    app_hashes: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SecurityState(prefix={self.policy.prefix!r}, apps={len(self.app_hashes)})"


def _common_name(der: bytes) -> tuple[str | None, int]:
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    return (value if isinstance(value, str) else None), cert.serial_number


def certificate_name(der: bytes) -> str | None:
    """The CN of a client certificate (DER), or None without exactly one."""
    return _common_name(der)[0]


class IdentityAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Certificate identity (CN) or app password; see the module docstring."""

    @dataclass
    class Config:
        """amqtt hydrates this from the plugin's entry in the broker configuration."""

        state: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        """True to let the client in, False to refuse it (CONNACK 5)."""
        state: SecurityState = self.config.state
        der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object is not None else None
        if der:
            return self._certificate_login(state, session, der)
        return self._password_login(state, session)

    def _certificate_login(self, state: SecurityState, session: Session, der: bytes) -> bool:
        name, serial = _common_name(der)
        if name is None:
            _log.warning("refused a certificate without exactly one CN")
            return False
        try:
            kind = identity_kind(name)
        except InvalidIdentityName:
            _log.warning("refused certificate CN %r: not a VIN or identity name", name[:64])
            return False
        if kind is IdentityKind.SERVER or (state.pki is not None and state.pki.is_revoked(serial)):
            _log.warning("refused certificate of %s (serial %x): revoked or not a client", name, serial)
            return False
        if session.client_id != name:
            # No certificate holder takes over (or disconnects) another identity's session.
            _log.warning("refused %s %s connecting with client id %r", kind.value, name, str(session.client_id)[:64])
            return False
        session.username = name  # the certificate decides who this is, not the CONNECT packet
        session.password = None
        session.attributes[LISTENER_ATTRIBUTE] = ListenerKind.DEVICE
        return self._will_allowed(state, session, ListenerKind.DEVICE)

    def _password_login(self, state: SecurityState, session: Session) -> bool:
        username, password = session.username, session.password
        hashed = state.app_hashes.get(username) if username else None
        if username is None or hashed is None or not verify_password(password or "", hashed):
            _log.info("refused app login for %r", (username or "")[:64])
            return False
        if session.client_id != username:
            _log.warning(
                "refused app %s connecting with client id %r (must be its username)", username, session.client_id
            )
            return False
        session.attributes[LISTENER_ATTRIBUTE] = ListenerKind.APP
        return self._will_allowed(state, session, ListenerKind.APP)

    @staticmethod
    def _will_allowed(state: SecurityState, session: Session, listener: ListenerKind) -> bool:
        # amqtt publishes a last will without asking the topic plugins: check it at CONNECT instead.
        if not session.will_flag or session.will_topic is None:
            return True
        assert session.username is not None  # set by both logins
        if state.policy.allows(session.username, listener, AclAction.PUBLISH, session.will_topic):
            return True
        _log.warning("refused %s: last will on %r is not allowed", session.username, session.will_topic)
        return False


class AclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """`AclPolicy` for every PUBLISH, SUBSCRIBE and delivery."""

    @dataclass
    class Config:
        """amqtt hydrates this from the plugin's entry in the broker configuration."""

        state: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        """True when the policy allows `action` on `topic` for this session's identity."""
        state: SecurityState = self.config.state
        if session is None or topic is None or action is None:
            return False
        listener = session.attributes.get(LISTENER_ATTRIBUTE)
        acl_action = _ACTIONS.get(action)
        if not isinstance(listener, ListenerKind) or session.username is None or acl_action is None:
            return False
        if acl_action is AclAction.SUBSCRIBE and topic.startswith("$share/"):
            # amqtt (MQTT 3.1.1) has no shared subscriptions: it would store the filter literally and never
            # deliver anything. Refuse, so the subscriber sees SUBACK 0x80 instead of silence.
            _log.warning("refused %s: shared subscriptions are not supported by amqtt", session.username)
            return False
        allowed = state.policy.allows(session.username, listener, acl_action, topic)
        if not allowed and acl_action is not AclAction.RECEIVE:
            _log.info("denied %s %s on %r", session.username, acl_action.value, topic[:128])
        return allowed
