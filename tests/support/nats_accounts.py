"""NATS servers that want credentials, for the tests of decision 67: an operator with its accounts
and users, as `nsc` issues them (JWTs signed with nkeys), and nats-servers in operator mode, with
nkey users, or with a user and password."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from services.cli.permissions import deployment_users
from services.platform.events.permissions import password_variable, render_config
from services.platform.events.topology import Topology
from services.platform.local_servers import NatsServer, ServerUrls
from tests.integration.services.harness import Keys

UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(prefix: int) -> Any:
    """A new nkey pair of the kind `prefix` names (nkeys.PREFIX_BYTE_OPERATOR, …)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public(key: Any) -> str:
    return str(key.public_key.decode())


def jwt(signer: Any, subject: str, name: str, claims: dict[str, Any], expires: int | None = None) -> str:
    """A NATS JWT (v2) of `claims` about `subject`, signed by `signer`, as the nats-io/jwt library
    encodes them."""
    body: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": public(signer),
        "name": name,
        "sub": subject,
        "nats": {**claims, "version": 2},
    }
    if expires is not None:
        body["exp"] = expires
    body["jti"] = (
        base64.b32encode(hashlib.new("sha512_256", json.dumps(body).encode()).digest()).decode().rstrip("=")
    )
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = signer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def creds(user_jwt: str, seed: bytes) -> str:
    """A credentials file's text, as `nsc generate creds` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass
class Operator:
    """An operator, its system account and one account with JetStream, whose users it issues."""

    key: Any = field(default_factory=lambda: new_key(nkeys.PREFIX_BYTE_OPERATOR))
    account: Any = field(default_factory=lambda: new_key(nkeys.PREFIX_BYTE_ACCOUNT))
    system: Any = field(default_factory=lambda: new_key(nkeys.PREFIX_BYTE_ACCOUNT))

    def config(self, max_control_line: int | None = None) -> str:
        """The part of a nats-server configuration that trusts this operator and its accounts, with
        `max_control_line` if given (nats-server's default: 4 KB)."""
        operator = jwt(
            self.key, public(self.key), "a4co", {"type": "operator", "system_account": public(self.system)}
        )
        account = jwt(
            self.key,
            public(self.account),
            "A4CO",
            {
                "limits": {**UNLIMITED, **JETSTREAM},
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
            },
        )
        system = jwt(
            self.key,
            public(self.system),
            "SYS",
            {"limits": UNLIMITED, "default_permissions": {"pub": {}, "sub": {}}, "type": "account"},
        )
        return (
            f"operator: {operator}\n"
            f"system_account: {public(self.system)}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {public(self.account)}: {account}\n"
            f"  {public(self.system)}: {system}\n"
            "}\n" + (f"max_control_line: {max_control_line}\n" if max_control_line else "")
        )

    def user_creds(
        self,
        path: Path,
        name: str,
        expires: int | None = None,
        permissions: dict[str, dict[str, list[str]]] | None = None,
    ) -> str:
        """The public key of a new user `name` of the account, whose credentials file is written
        at `path`; `permissions` as `a4co nats-permissions --format json` gives a user's ({"publish":
        {"allow": [...], "deny": [...]}, "subscribe": {...}}), or none: anything."""
        user = new_key(nkeys.PREFIX_BYTE_USER)
        given = permissions or {}
        claims = {
            "pub": given.get("publish", {}),
            "sub": given.get("subscribe", {}),
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
        }
        path.write_text(creds(jwt(self.account, public(user), name, claims, expires), user.seed))
        path.chmod(0o600)
        return public(user)


class ConfiguredNats(NatsServer):
    """nats-server with JetStream and the configuration `extra` (how it authenticates clients)."""

    name = "nats-auth"

    def __init__(self, data_dir: Path, extra: str) -> None:
        super().__init__(data_dir, durable=False, config=extra)

    @property
    def extra(self) -> str:
        return self.config

    def reconfigure(self, extra: str) -> None:
        """Reload the server with the configuration `extra` (SIGHUP), as an operator does."""
        assert self.pid is not None, "running"
        self.config = extra
        self.write_config()
        os.kill(self.pid, signal.SIGHUP)


class PermissionedNats(ConfiguredNats):
    """nats-server whose users are the deployment's, one per service plus `a4co` and `reader`,
    each allowed what `a4co nats-permissions` derives for the prefix (decision 68), with a
    password of its own. A client that is none of them is refused."""

    name = "nats-permissioned"

    def __init__(self, data_dir: Path, prefix: str, withheld: dict[str, str] | None = None) -> None:
        """`withheld` takes from a user (a key) a subject it may publish to (its value)."""
        self.topology = Topology(prefix)
        self.users = deployment_users(self.topology)
        # nats-server reads an environment variable as a value of its configuration: a password
        # starting with a digit would be taken for a number.
        self.passwords = {p.user: "p" + secrets.token_hex(16) for p in self.users}
        super().__init__(data_dir, self.configuration(withheld or {}))

    def configuration(self, withheld: dict[str, str]) -> str:
        users = [
            dataclasses.replace(p, publish=tuple(s for s in p.publish if s != withheld.get(p.user)))
            for p in self.users
        ]
        return render_config(users, self.topology)

    def permit_all(self) -> None:
        """Reload the server with every user's permissions whole (SIGHUP)."""
        self.reconfigure(self.configuration({}))

    def _popen_kwargs(self) -> dict[str, object]:
        """The passwords in nats-server's environment, where the configuration reads them."""
        kwargs = super()._popen_kwargs()
        env = dict(kwargs["env"])  # type: ignore[call-overload]
        env.update({password_variable(user): password for user, password in self.passwords.items()})
        return {**kwargs, "env": env}

    def url_of(self, user: str) -> str:
        """The URL a client connects with as `user`."""
        return f"nats://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    def violations(self) -> list[str]:
        """The lines of the server's log where it refused a client a subject."""
        log = self.data_dir.parent / f"{self.name}.log"
        return [line for line in log.read_text(errors="replace").splitlines() if "Violation" in line]


def service_env(urls: ServerUrls, prefix: str, keys: Keys, nats_url: str, **extra: str) -> dict[str, str]:
    """A service's environment for the prefix, on the NATS of `nats_url` (TLS and NATS variables
    of the test session's own left out), with `extra`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("A4CO_TLS_", "A4CO_NATS_"))}
    return {
        **environment,
        **urls.as_env(),
        "A4CO_NATS_URL": nats_url,
        "A4CO_PREFIX": prefix,
        "A4CO_JWT_PUBLIC_KEY_FILE": str(keys.public_file),
        **extra,
    }
