"""Who may use the console: the holders of the API's own keys.

- **Login**: the form takes an access key id and its secret (``<data_dir>/credentials.json``,
  what ``eval "$(shipyard server status)"`` exports), or a one-time link that
  ``shipyard server status`` prints (as Jupyter prints its token URL).
- **Session**: a cookie ``<access key>.<expiry>.<session id>.<signature>``, signed with the
  key's secret (HMAC-SHA256), HttpOnly and SameSite=Strict, scoped to the console's path. It
  holds no secret and nothing is stored server-side: a server restart keeps sessions, and a
  key removed from the credentials file ends its sessions at once (the secrets are the
  server's live view of the file).
- **CSRF**: every action (a POST) carries a token, an HMAC of the session id under the same
  secret, as a form field or the ``X-CSRF-Token`` header (htmx sends it); a POST without
  the session's token is refused, whatever its cookie.
- **Login links**: ``<access key>.<expiry>.<nonce>.<signature>``; the server redeems each
  nonce once (remembered in ``<data_dir>/console-links`` until it expires, so a restart does
  not make a used link good again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as _random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["COOKIE", "Gate", "Session", "login_link", "sign_link"]

COOKIE = "shipyard_console"
SESSION_SECONDS = 12 * 3600
LINK_SECONDS = 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def _mac(secret: str, *parts: str) -> str:
    digest = hmac.new(secret.encode(), "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    access_key: str
    sid: str
    expires: int
    csrf: str


def sign_link(access_key: str, secret: str, *, now: float | None = None,
              seconds: int = LINK_SECONDS) -> str:
    """A one-time login token for ``access_key``, good for ``seconds``."""
    expires = str(int((time.time() if now is None else now) + seconds))
    nonce = _random.token_urlsafe(16)
    return ".".join((access_key, expires, nonce, _mac(secret, "link", access_key, expires,
                                                        nonce)))


def login_link(base_url: str, access_key: str, secret: str, prefix: str = "/console") -> str:
    """The URL ``shipyard server status`` prints: opening it logs the browser in, once."""
    return f"{base_url}{prefix}/login/link?token={quote(sign_link(access_key, secret))}"


class Gate:
    """Checks logins, sessions, CSRF tokens and login links against the API's keys."""

    def __init__(self, secrets: Mapping[str, str], used_links: Path | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._secrets = secrets
        self._used_path = used_links
        self._clock = clock
        self._lock = threading.Lock()
        self._used: dict[str, int] = self._load_used()

    # -- sessions --------------------------------------------------------------------------
    def login(self, access_key: str, secret: str) -> str | None:
        """A session cookie's value for a right key pair, else None."""
        known = self._secrets.get(access_key)
        if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
            return None
        return self._new_session(access_key, known)

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie proves, or None (forged, expired, or its key is gone)."""
        parts = (cookie or "").split(".")
        if len(parts) != 4:
            return None
        access_key, expires, sid, signature = parts
        secret = self._secrets.get(access_key)
        if secret is None or not expires.isdigit() or int(expires) < self._clock():
            return None
        if not hmac.compare_digest(signature, _mac(secret, "session", access_key, expires,
                                                   sid)):
            return None
        return Session(access_key, sid, int(expires), _mac(secret, "csrf", sid))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf, token or "")

    def _new_session(self, access_key: str, secret: str) -> str:
        expires = str(int(self._clock()) + SESSION_SECONDS)
        sid = _random.token_urlsafe(16)
        return ".".join((access_key, expires, sid, _mac(secret, "session", access_key,
                                                         expires, sid)))

    # -- one-time links --------------------------------------------------------------------
    def redeem(self, token: str) -> str | None:
        """A session cookie's value for a good, unused, unexpired link token; uses it up."""
        parts = token.split(".")
        if len(parts) != 4:
            return None
        access_key, expires, nonce, signature = parts
        secret = self._secrets.get(access_key)
        now = self._clock()
        if secret is None or not expires.isdigit() or int(expires) < now:
            return None
        if not hmac.compare_digest(signature, _mac(secret, "link", access_key, expires, nonce)):
            return None
        with self._lock:
            if nonce in self._used:
                return None
            self._used = {n: e for n, e in self._used.items() if e >= now}
            self._used[nonce] = int(expires)
            self._save_used()
        return self._new_session(access_key, secret)

    def _load_used(self) -> dict[str, int]:
        if self._used_path is None:
            return {}
        try:
            lines = self._used_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return {}
        used = {}
        for line in lines:
            nonce, _, expires = line.partition(" ")
            if expires.isdigit():
                used[nonce] = int(expires)
        return used

    def _save_used(self) -> None:
        if self._used_path is None:
            return
        temporary = self._used_path.with_name(self._used_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(f"{n} {e}\n" for n, e in self._used.items())
        os.replace(temporary, self._used_path)
