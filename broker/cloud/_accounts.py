"""CUPRA ID accounts: registration, e-mail verification, login sessions, password and S-PIN changes.

R1: an account must be verified through the e-mail link before it can enrol a car, and registering an address
that is taken looks exactly like registering a new one (the owner of the address gets a mail instead).
R2: the S-PIN is 4 non-trivial digits, stored as a keyed hash. R4: it can be changed with the old one, once a
car is enrolled. R17: changing the password ends every other session; a session idle longer than the user's
re-authentication timeout (5, 10 or 15 minutes) must enter the password again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from broker.registry import EnrolmentState, MailRecord, SessionRecord, UserRecord

from ._context import ServiceContext
from ._errors import InvalidRequest, SessionExpired, SpinPolicyViolation, Unauthenticated
from ._security import hash_token, new_email_code, new_token, spin_policy_problem
from ._spin import SpinGuard

__all__ = ["REAUTH_CHOICES", "AccountService", "LoginResult", "Principal"]

#: The re-authentication timeouts an app may choose (R17), in minutes; None: never ask.
REAUTH_CHOICES = frozenset({5, 10, 15})

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
# A session's activity is written at most this often (seconds): a burst of requests costs one write.
_TOUCH_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a valid session token belongs to."""

    user: UserRecord
    token_hash: str = field(repr=False)

    @property
    def user_id(self) -> str:
        """The user's id."""
        return self.user.id


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A new session. The token is shown once, to the app; the registry keeps only its hash."""

    token: str = field(repr=False)
    user_id: str
    email: str
    verified: bool

    def as_result(self) -> dict[str, object]:
        """The `result` of the app's `login` response."""
        return {"token": self.token, "user_id": self.user_id, "email": self.email, "verified": self.verified}


class AccountService:
    """Accounts and sessions (R1, R2, R4, R17)."""

    def __init__(self, ctx: ServiceContext, spin: SpinGuard) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._spin = spin

    def __repr__(self) -> str:
        return f"AccountService({self._reg!r})"

    # -- registration ----------------------------------------------------------------------------------------
    async def register(self, email: str, password: str, spin: str) -> None:
        """Create a CUPRA ID and mail a verification link. Returns nothing, and the same nothing when the
        address is taken: its owner gets a mail about the attempt (or a fresh link if still unverified)."""
        email = self._check_email(email)
        self._check_password(password)
        if (problem := spin_policy_problem(spin)) is not None:
            raise SpinPolicyViolation(f"The S-PIN is not allowed: {problem}.")
        # Hash before looking the address up, so that both paths take the same time.
        password_hash = await self._ctx.passwords.hash(password)
        user_id = self._ctx.new_id("u")
        user = UserRecord(
            id=user_id, email=email, password_hash=password_hash, spin_hash=self._ctx.secret.spin_hash(user_id, spin),
            verified=False, reauth_minutes=None, created_at=self._ctx.now(),
        )
        if await self._reg.create_user(user):
            await self._send_verification(user)
            await self._ctx.audit("account.registered", user_id=user.id)
            return
        existing = await self._reg.get_user_by_email(email)
        if existing is None:  # pragma: no cover - users are never deleted, so a taken address has a user
            return
        if existing.verified:
            await self._ctx.mail(
                existing.email,
                "Someone tried to create a CUPRA ID with your address",
                "Somebody tried to register a new CUPRA ID with this e-mail address, which already has one. "
                "If it was you, log in instead (or reset your password). If not, you can ignore this mail.",
                user_id=existing.id,
            )
        else:
            await self._send_verification(existing)
        await self._ctx.audit("account.register_taken", "refused", user_id=existing.id)

    async def _send_verification(self, user: UserRecord) -> None:
        code = new_email_code()
        now = self._ctx.now()
        await self._reg.add_email_code(hash_token(code), user.id, now, now + self._ctx.config.email_code_ttl_s)
        await self._ctx.mail(
            user.email,
            "Verify your CUPRA ID",
            "Welcome to CUPRA CONNECT. Confirm your e-mail address by opening "
            f"https://id.cupra.example/verify?code={code} (or enter the code {code} in the app).",
            user_id=user.id,
        )

    async def verify_email(self, code: str) -> None:
        """Confirm the e-mail address with the code of the verification link (R1). A code works once."""
        if not isinstance(code, str) or not 8 <= len(code) <= 128:
            raise InvalidRequest("This verification link is not valid or has expired.")
        user_id = await self._reg.use_email_code(hash_token(code), self._ctx.now())
        if user_id is None:
            await self._ctx.audit("account.verify", "refused")
            raise InvalidRequest("This verification link is not valid or has expired.")
        await self._reg.set_user_verified(user_id)
        await self._ctx.audit("account.verified", user_id=user_id)

    # -- sessions --------------------------------------------------------------------------------------------
    async def login(self, email: str, password: str) -> LoginResult:
        """Check e-mail and password and open a session. A wrong address and a wrong password get the same
        error, after the same work."""
        if not isinstance(email, str) or not isinstance(password, str):
            raise InvalidRequest("E-mail address and password are required.")
        user = await self._reg.get_user_by_email(email)
        ok = await self._ctx.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            await self._ctx.audit("login", "refused", user_id=user.id if user else None)
            raise Unauthenticated("The e-mail address or the password is not correct.")
        if self._ctx.passwords.needs_rehash(user.password_hash):
            await self._reg.set_password_hash(user.id, await self._ctx.passwords.hash(password))
        token = new_token()
        now = self._ctx.now()
        await self._reg.create_session(
            SessionRecord(token_hash=hash_token(token), user_id=user.id, created_at=now, last_activity=now)
        )
        await self._ctx.audit("login", user_id=user.id)
        return LoginResult(token=token, user_id=user.id, email=user.email, verified=user.verified)

    async def authenticate(self, token: str | None) -> Principal:
        """The user of a session token, checking revocation and the idle and age limits (R17); records the
        activity. `Unauthenticated` for a missing, unknown or revoked token, `SessionExpired` for an idle one."""
        if not token or not isinstance(token, str) or len(token) > 256:
            raise Unauthenticated()
        token_hash = hash_token(token)
        found = await self._reg.get_session_user(token_hash)
        if found is None or found[0].revoked_at is not None:
            raise Unauthenticated()
        session, user = found
        now = self._ctx.now()
        max_age = self._ctx.config.session_max_age_s
        # The session is not touched while expired, so it stays expired until the user logs in again.
        if user.reauth_minutes is not None and now - session.last_activity > user.reauth_minutes * 60:
            raise SessionExpired()
        if max_age is not None and now - session.created_at > max_age:
            raise SessionExpired()
        if now - session.last_activity >= _TOUCH_EVERY_S:
            await self._reg.touch_session(token_hash, now)
        return Principal(user=user, token_hash=token_hash)

    async def logout(self, token: str | None) -> None:
        """End the session (also an expired one)."""
        if not token or not isinstance(token, str) or len(token) > 256:
            raise Unauthenticated()
        token_hash = hash_token(token)
        session = await self._reg.get_session(token_hash)
        if session is None or not await self._reg.revoke_session(token_hash, self._ctx.now()):
            raise Unauthenticated()
        await self._ctx.audit("logout", user_id=session.user_id)

    async def change_password(self, token: str | None, old_password: str, new_password: str) -> int:
        """Replace the password (the old one is required) and end every other session of the user (R17);
        how many sessions were ended."""
        me = await self.authenticate(token)
        if not isinstance(old_password, str) or not await self._ctx.passwords.verify(
            me.user.password_hash, old_password
        ):
            await self._ctx.audit("password.change", "refused", user_id=me.user_id)
            raise InvalidRequest("The current password is not correct.")
        self._check_password(new_password)
        await self._reg.set_password_hash(me.user_id, await self._ctx.passwords.hash(new_password))
        ended = await self._reg.revoke_user_sessions(me.user_id, self._ctx.now(), keep=me.token_hash)
        await self._ctx.audit("password.changed", user_id=me.user_id, sessions_ended=ended)
        await self._ctx.mail(
            me.user.email, "Your CUPRA ID password was changed",
            "The password of your CUPRA ID was changed and every other session was logged out.",
            user_id=me.user_id,
        )
        return ended

    async def set_reauth_timeout(self, token: str | None, minutes: int | None) -> None:
        """Ask for the password again after 5, 10 or 15 idle minutes, or never (None) (R17)."""
        me = await self.authenticate(token)
        if minutes is not None and (isinstance(minutes, bool) or minutes not in REAUTH_CHOICES):
            raise InvalidRequest("The re-authentication time must be 5, 10 or 15 minutes, or none.")
        await self._reg.set_reauth_minutes(me.user_id, minutes)
        await self._ctx.audit("reauth_timeout.set", user_id=me.user_id, minutes=minutes)

    # -- S-PIN -----------------------------------------------------------------------------------------------
    async def change_spin(self, token: str | None, old_spin: str | None, new_spin: str) -> None:
        """Replace the S-PIN (R4): needs at least one enrolled car and the old S-PIN, which counts towards the
        lockout like any other S-PIN entry (R3)."""
        me = await self.authenticate(token)
        garage = await self._reg.list_user_enrolments(me.user_id)
        if not any(e.state is EnrolmentState.ACTIVE for e in garage):
            raise InvalidRequest("The S-PIN can be changed once a car is enrolled in your garage.")
        if (problem := spin_policy_problem(new_spin)) is not None:
            raise SpinPolicyViolation(f"The S-PIN is not allowed: {problem}.")
        await self._spin.verify(me.user, old_spin)
        await self._reg.set_spin_hash(me.user_id, self._ctx.secret.spin_hash(me.user_id, new_spin))
        await self._ctx.audit("spin.changed", user_id=me.user_id)
        await self._ctx.mail(
            me.user.email, "Your S-PIN was changed", "The S-PIN of your CUPRA ID was changed.", user_id=me.user_id
        )

    # -- mailbox ---------------------------------------------------------------------------------------------
    async def mailbox(self, token: str | None) -> list[MailRecord]:
        """The simulated e-mails sent to the user's address."""
        me = await self.authenticate(token)
        return await self._reg.list_mail(me.user.email)

    async def mailbox_for(self, email: str) -> list[MailRecord]:
        """The simulated e-mails sent to any address (for operators: `tcu-sim cloud mailbox EMAIL`)."""
        return await self._reg.list_mail(email)

    # -- input checks ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_email(email: object) -> str:
        if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email.strip()):
            raise InvalidRequest("Please enter a valid e-mail address.")
        return email.strip()

    def _check_password(self, password: object) -> None:
        n = self._ctx.config.password_min_length
        if not isinstance(password, str) or not n <= len(password) <= 1024:
            raise InvalidRequest(f"The password must have at least {n} characters.")
