"""Dashboard accounts and API tokens, kept in Redis: passwords as scrypt hashes, tokens as digests."""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

USERS_KEY = "dashboard:users"    # hash: name -> {"password_hash", "role"} (JSON)
TOKENS_KEY = "dashboard:tokens"  # hash: sha256(token) hex -> name; the token itself is never stored
SESSION_PREFIX = "dashboard:session:"         # + sha256(session id) hex -> name, with the session's TTL
USER_SESSIONS_PREFIX = "dashboard:sessions-of:"  # + name: set of sha256(session id) hex
# Counter bumped whenever a session, an account, a role or a token ends: every web process
# watches it and then checks its live Socket.IO connections again (web.sockets.watch_access).
ACCESS_EPOCH_KEY = "dashboard:access-epoch"
ROLES = ("viewer", "operator", "admin")
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
# Checked against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password", method="scrypt")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_launch(self) -> bool:
        return self.role in ("operator", "admin")


# Who every request is when AUTH_REQUIRED is off (the web server listens on loopback only).
LOCAL_ADMIN = User("local", "admin")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class UserStore:
    """Adds, checks and removes accounts and their API tokens."""

    def __init__(self, client: Any, check: Callable[[str, str], bool] = check_password_hash) -> None:
        """`client`: a Redis client; `check(hash, password)`: werkzeug's check_password_hash, or the
        web's, which runs it off the event loop (web.offload.password_check)."""
        self.client = client
        self.check = check

    def add(self, name: str, password: str, role: str) -> User:
        """Create or replace an account; raise ValueError for a bad name, role or short password."""
        if not NAME.match(name):
            raise ValueError("a user name is 1-64 letters, digits or _ . @ -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
        entry = {"password_hash": generate_password_hash(password, method="scrypt"), "role": role}
        previous = self._entry(name)
        self.client.hset(USERS_KEY, name, json.dumps(entry))
        if previous is not None:  # a new password or role: signed-in sessions end, live connections too
            self.end_sessions(name)
        return User(name, role)

    def set_role(self, name: str, role: str) -> User:
        """Change an account's role; its sessions and live connections end (tokens stay, with the
        new role). Raise ValueError for an unknown user or role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        entry = self._entry(name)
        if entry is None:
            raise ValueError(f"no user {name!r}")
        entry["role"] = role
        self.client.hset(USERS_KEY, name, json.dumps(entry))
        self.end_sessions(name)
        return User(name, role)

    def _entry(self, name: str) -> dict[str, Any] | None:
        if not isinstance(name, str) or not NAME.match(name):
            return None
        raw = self.client.hget(USERS_KEY, name)
        return json.loads(raw) if raw else None

    def get(self, name: str) -> User | None:
        entry = self._entry(name)
        return User(name, entry["role"]) if entry else None

    def authenticate(self, name: str, password: str) -> User | None:
        entry = self._entry(name)
        ok = self.check(entry["password_hash"] if entry else _DUMMY_HASH, password)
        return User(name, entry["role"]) if entry and ok else None

    def all(self) -> list[User]:
        users = self.client.hgetall(USERS_KEY)
        return sorted((User(_text(n), json.loads(v)["role"]) for n, v in users.items()), key=lambda u: u.name)

    def remove(self, name: str) -> bool:
        """Delete the account and every token it has."""
        removed = bool(self.client.hdel(USERS_KEY, name))
        self.revoke_tokens(name)
        self.end_sessions(name)
        return removed

    def revoke_tokens(self, name: str) -> int:
        """Revoke every API token of `name`; return how many. Connections opened with them end."""
        tokens = [k for k, v in self.client.hgetall(TOKENS_KEY).items() if _text(v) == name]
        if tokens:
            self.client.hdel(TOKENS_KEY, *tokens)
            self.client.incr(ACCESS_EPOCH_KEY)
        return len(tokens)

    def revoke_token(self, token: str) -> str | None:
        """Revoke one API token; return whose it was, or None if it was not valid."""
        name = self.client.hget(TOKENS_KEY, digest(token)) if token and len(token) <= 200 else None
        if not name:
            return None
        self.client.hdel(TOKENS_KEY, digest(token))
        self.client.incr(ACCESS_EPOCH_KEY)
        return _text(name)

    # ---- server-side sessions: the cookie carries a random id; Redis says whether it still holds

    def start_session(self, name: str, ttl: int) -> str:
        """A new session id for `name`, valid `ttl` seconds unless ended; only its digest is kept."""
        session_id = secrets.token_urlsafe(32)
        key = digest(session_id)
        mine = USER_SESSIONS_PREFIX + name
        with self.client.pipeline() as pipe:
            pipe.set(SESSION_PREFIX + key, name, ex=ttl)
            pipe.sadd(mine, key)
            pipe.expire(mine, ttl)
            pipe.execute()
        return session_id

    def session_user(self, session_id: str) -> str | None:
        """The user a session id belongs to, or None once it ended or expired."""
        if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
            return None
        name = self.client.get(SESSION_PREFIX + digest(session_id))
        return _text(name) if name else None

    def end_session(self, session_id: str) -> None:
        """Sign-out: the session id stops working on every web process (a copied cookie too)."""
        if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
            return
        key = digest(session_id)
        name = self.client.getdel(SESSION_PREFIX + key)
        if name:
            self.client.srem(USER_SESSIONS_PREFIX + _text(name), key)
        self.client.incr(ACCESS_EPOCH_KEY)

    def end_sessions(self, name: str) -> None:
        """End every session of `name` (account removed, role or password changed)."""
        mine = USER_SESSIONS_PREFIX + name
        keys = [_text(k) for k in self.client.smembers(mine)]
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.delete(SESSION_PREFIX + key)
            pipe.delete(mine)
            pipe.incr(ACCESS_EPOCH_KEY)
            pipe.execute()

    def access_epoch(self) -> int:
        """The counter ACCESS_EPOCH_KEY: it changes whenever some access ended."""
        return int(self.client.get(ACCESS_EPOCH_KEY) or 0)

    def new_token(self, name: str) -> str:
        """A new API token for `name`, returned once; only its digest is kept."""
        if self.get(name) is None:
            raise ValueError(f"no user {name!r}")
        token = secrets.token_urlsafe(32)
        self.client.hset(TOKENS_KEY, digest(token), name)
        return token

    def by_token(self, token: str) -> User | None:
        if not token or len(token) > 200:
            return None
        name = self.client.hget(TOKENS_KEY, digest(token))
        return self.get(_text(name)) if name else None
