"""Who a process is to NATS (decision 67): NATS's own ways, as its CLI and every client take them.

- `A4CO_NATS_CREDS_FILE`: a credentials file, a user's JWT and its nkey seed, as NATS's operator
  mode issues them (`nsc generate creds`, or a NATS service's console);
- `A4CO_NATS_NKEY_FILE`: the seed of a user's nkey (`SU…`), for a server whose configuration
  names the user's public key;
- a user and password, or a token, in `A4CO_NATS_URL` (`nats://inventory:secret@nats:4222`,
  `nats://s3cr3t@nats:4222`), which nats-py takes from the URL as NATS's other clients do.

nats-py reads the file at each connection, so a renewed file is used from the next reconnection.
A URL is never logged with its password or token (`redact`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import nkeys  # type: ignore[import-untyped]
from nats.errors import AuthorizationError

CREDS_FILE = "A4CO_NATS_CREDS_FILE"
NKEY_FILE = "A4CO_NATS_NKEY_FILE"
# What the server answers a connection whose credentials it does not accept (-ERR), in lower case.
REFUSALS = ("authorization violation", "authentication expired", "authentication revoked")


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    """The credentials file or nkey seed file a process connects to NATS with; neither by default
    (plaintext anonymous, or what the URL holds)."""

    creds_file: str = ""
    nkey_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NatsCredentials:
        """`A4CO_NATS_CREDS_FILE` or `A4CO_NATS_NKEY_FILE`, checked (`check`); ValueError, naming
        the variable, for both set or a file that is not what it should be."""
        found = cls(env.get(CREDS_FILE, ""), env.get(NKEY_FILE, ""))
        found.check()
        return found

    def check(self) -> None:
        """ValueError, naming the variable and the file, when both are set, or the file cannot be
        read or does not hold what the variable says."""
        if self.creds_file and self.nkey_file:
            raise ValueError(f"set {CREDS_FILE} or {NKEY_FILE}, not both")
        if self.creds_file:
            text = _read(CREDS_FILE, self.creds_file)
            if "BEGIN NATS USER JWT" not in text or "NKEY SEED" not in text:
                raise ValueError(
                    f"{CREDS_FILE}={self.creds_file}: not a NATS credentials file (a user's JWT and its"
                    " nkey seed, as `nsc generate creds` writes them)"
                )
        if self.nkey_file:
            seed = _read(NKEY_FILE, self.nkey_file).strip()
            try:
                nkeys.from_seed(seed.encode())
            except (nkeys.NkeysError, ValueError, TypeError):
                valid = False
            else:
                valid = seed.startswith("SU")
            if not valid:
                raise ValueError(f"{NKEY_FILE}={self.nkey_file}: not the seed of a user's nkey (SU…)")

    def options(self) -> dict[str, Any]:
        """nats-py's connection options for them."""
        if self.creds_file:
            return {"user_credentials": self.creds_file}
        if self.nkey_file:
            return {"nkeys_seed": self.nkey_file}
        return {}

    def hint(self, url: str) -> str:
        """What to correct when NATS refuses them."""
        if self.creds_file:
            return (
                f"{CREDS_FILE} must hold a user of an account NATS trusts, its JWT neither expired nor"
                " revoked"
            )
        if self.nkey_file:
            return f"{NKEY_FILE} must hold the seed of a user NATS's configuration names"
        if any(split_server(server).username for server in url.split(",")):
            return "the user and password (or token) in A4CO_NATS_URL must be ones NATS's configuration names"
        return (
            f"this NATS requires credentials: set {CREDS_FILE}, {NKEY_FILE}, or a user and password in"
            " A4CO_NATS_URL"
        )


NO_CREDENTIALS = NatsCredentials()


def url_auth(url: str) -> dict[str, Any]:
    """nats-py's options for the user and password (or token) of the first server of `url` that
    has one, so that they go to every server: nats-py sends a URL's own only to that server, and
    connects to the servers a cluster announces (`connect_urls`) with none, which a NATS with
    `no_auth_user` takes as that user (as NATS's Go client does, the URL's are used for them)."""
    for server in url.split(","):
        parts = split_server(server.strip())
        if parts.username and parts.password is not None:
            return {"user": parts.username, "password": parts.password}
        if parts.username:
            return {"token": parts.username}
    return {}


def refused(exc: BaseException) -> bool:
    """Whether `exc` is NATS refusing a connection's credentials."""
    text = str(exc).lower()
    return isinstance(exc, AuthorizationError) or any(refusal in text for refusal in REFUSALS)


def redact(url: str) -> str:
    """`url` (a server, or several separated by commas) without its passwords and tokens: each
    replaced by `***`, the user's name kept, and the rest as it was written."""
    return ",".join(_redact_server(server) for server in url.split(","))


def split_server(server: str) -> SplitResult:
    """One server of a NATS URL, parsed as NATS's clients read it: `nats://` when it names no
    scheme."""
    server = server.strip()
    return urlsplit(server if "://" in server else f"nats://{server}")


def with_user(url: str, user: str, password: str) -> str:
    """`url` (one server, or a cluster's separated by commas) with `user` and `password` in each
    server, as NATS's clients take them (as they are: nats-py does not decode %-escapes)."""
    servers = []
    for server in url.split(","):
        parts = split_server(server)
        host = parts.netloc.rpartition("@")[2]
        servers.append(f"{parts.scheme}://{user}:{password}@{host}{parts.path}")
    return ",".join(servers)


def _redact_server(server: str) -> str:
    parts = split_server(server)
    if parts.username is None and parts.password is None:
        return server
    who = f"{parts.username}:***" if parts.password is not None else "***"  # a token alone
    head, _, host = server.rpartition("@")  # a host has no @: the user's part ends at the last
    start = head.index("://") + 3 if "://" in head else len(head) - len(head.lstrip())
    return f"{server[:start]}{who}@{host}"


def _read(variable: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{variable}={path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
