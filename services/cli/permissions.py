"""`a4co nats-permissions`: each NATS user of the deployment and what it may publish and subscribe
to, derived from the contracts and the services' subscription tables (decision 68)."""

from __future__ import annotations

import enum
import importlib
import json
import os
from pathlib import Path
from typing import Annotated

import nkeys  # type: ignore[import-untyped]
import typer

from services.cli.connection import Prefix, deployment_prefix
from services.launcher.supervisor import SERVICES
from services.platform.events.permissions import (
    Permissions,
    deployment_permissions,
    render_config,
    render_nsc,
)
from services.platform.events.registry import EventRegistry, load_registry
from services.platform.events.subscriptions import Table
from services.platform.events.topology import Topology


class Format(enum.StrEnum):
    CONF = "conf"
    JSON = "json"
    NSC = "nsc"


def subscription_tables() -> dict[str, Table]:
    """Each service's `services.<name>.subscriptions.HANDLERS`, empty for one that consumes
    nothing, in the order the services start."""
    tables: dict[str, Table] = {}
    for service in SERVICES:
        try:
            module = importlib.import_module(f"services.{service}.subscriptions")
        except ModuleNotFoundError:
            tables[service] = {}
            continue
        tables[service] = getattr(module, "HANDLERS", {})
    return tables


def consumed_streams(registry: EventRegistry) -> dict[str, list[str]]:
    """Each service and the declared streams it consumes."""
    return {
        service: sorted({registry.of(event_class).stream for event_class in table})
        for service, table in subscription_tables().items()
    }


def deployment_users(topology: Topology) -> list[Permissions]:
    """The NATS users of the deployment under `topology`'s prefix and what each may do."""
    registry = load_registry()
    return deployment_permissions(registry, consumed_streams(registry), topology)


def nats_permissions(
    output: Annotated[
        Format,
        typer.Option(
            "--format",
            help="conf: an `authorization` block for nats-server's configuration, passwords from"
            " its environment; json: each user's permissions, as user JWTs hold them; nsc: `nsc add"
            " user` commands for operator mode",
        ),
    ] = Format.CONF,
    prefix: Prefix = None,
    account: Annotated[str, typer.Option(help="the account the nsc commands add users to")] = "A4CO",
    nkeys_dir: Annotated[
        Path | None,
        typer.Option(
            "--nkeys",
            help="conf: each user known by an nkey whose seed is DIR/<user>.nk (made if missing,"
            " kept if there), the file a service is given as A4CO_NATS_NKEY_FILE; no passwords",
        ),
    ] = None,
) -> None:
    """Print the NATS users of a deployment, with what each may publish and subscribe to.

    One user per service, plus `a4co` (this command) and `reader` (a client reading the events)."""
    topology = Topology(deployment_prefix(prefix))
    if nkeys_dir is not None and output is not Format.CONF:
        raise typer.BadParameter("--nkeys goes with --format conf: the seeds' public keys are named there")
    users = deployment_users(topology)
    if output is Format.JSON:
        typer.echo(json.dumps({p.user: p.as_dict() for p in users}, indent=2))
    elif output is Format.NSC:
        typer.echo(render_nsc(users, account), nl=False)
    else:
        keys = user_nkeys(nkeys_dir, [u.user for u in users]) if nkeys_dir is not None else None
        typer.echo(render_config(users, topology, nkeys=keys), nl=False)


def user_nkeys(directory: Path, users: list[str]) -> dict[str, str]:
    """Each user's public nkey, from the seed in `directory/<user>.nk`, made (readable by its
    owner only) where there is none: running the command again keeps every user's key."""
    directory.mkdir(parents=True, exist_ok=True)
    public = {}
    for user in users:
        path = directory / f"{user}.nk"
        if not path.exists():
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            path.touch(mode=0o600)
            path.write_bytes(seed + b"\n")
        try:
            public[user] = nkeys.from_seed(path.read_bytes().strip()).public_key.decode()
        except (nkeys.NkeysError, ValueError, TypeError, OSError) as exc:
            raise typer.BadParameter(f"{path}: not a user's nkey seed ({exc})") from None
    return public
