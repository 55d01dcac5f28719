"""Safe by default: the bind rule, the token, sessions and CSRF (pure; no framework).

- Bound to a loopback address, pages and the API are open to this machine; actions
  (run, pause, resume a job) need a login with the token.
- Bound elsewhere, it starts only with a token from the environment (TOKEN_ENV), and every
  page and API call needs it: a session cookie from the login form, or
  `Authorization: Bearer <token>`.
- Without TOKEN_ENV on loopback, a random token is made at start and printed.
- Sessions are random ids the process keeps (a restart logs everyone out); the cookie is
  HttpOnly and SameSite=Strict. Each form carries a CSRF token, an HMAC of the session,
  and a POST must also come from this origin (Origin or Referer) when the browser says.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TOKEN_ENV = "NEWSCRAWL_WEB_TOKEN"
SESSION_COOKIE = "newscrawl_session"
MIN_TOKEN_LENGTH = 16


class StartRefused(ValueError):
    """The console will not start as asked (one line saying why)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_token(host: str, environ_token: str | None) -> tuple[str, bool]:
    """The token and whether it was made here (to be printed); StartRefused when the
    console is bound beyond this machine without a good token from the environment."""
    token = (environ_token or "").strip()
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise StartRefused(f"{TOKEN_ENV} is shorter than {MIN_TOKEN_LENGTH} characters")
        return token, False
    if not is_loopback(host):
        raise StartRefused(f"bound to {host}, beyond this machine: set {TOKEN_ENV} (at least "
                           f"{MIN_TOKEN_LENGTH} characters, e.g. `python -c 'import secrets; "
                           f"print(secrets.token_urlsafe())'`) so that every request needs it")
    return secrets.token_urlsafe(18), True


def same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """A POST's Origin (else Referer) names this host; a request that sends neither is let
    through (old clients), the CSRF token still guards it."""
    claimed = origin if origin and origin != "null" else referer
    if origin == "null":
        return False
    if not claimed:
        return True
    return urlsplit(claimed).netloc == (host or "")


@dataclass
class Guard:
    token: str
    open_reads: bool  # loopback: pages and the API need no login
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: set[str] = field(default_factory=set)

    def login(self, given: str | None) -> str | None:
        """A new session id for the right token, else None."""
        if not same_token(given, self.token):
            return None
        session = secrets.token_urlsafe(24)
        self.sessions.add(session)
        return session

    def logout(self, session: str | None) -> None:
        self.sessions.discard(session or "")

    def signed_in(self, session: str | None) -> bool:
        return bool(session) and session in self.sessions

    def csrf_token(self, session: str | None) -> str:
        return hmac.new(self.secret, (session or "").encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str | None, given: str | None) -> bool:
        return self.signed_in(session) and given is not None and hmac.compare_digest(
            given.encode(), self.csrf_token(session).encode())

    def may_read(self, session: str | None, authorization: str | None) -> bool:
        return self.open_reads or self.signed_in(session) or same_token(bearer(authorization), self.token)
