"""The entry point every service's `__main__` calls: settings, logging, servers, run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from services.platform.events.connection import NatsSettingError
from services.platform.grpc.server import EXIT_CANNOT_LISTEN, ListenError
from services.platform.logs import configure_logging
from services.platform.memory import cap_arenas, freeze_start_up_objects
from services.platform.runtime import (
    BrokenError,
    Infrastructure,
    NatsClosedError,
    ServiceParts,
    ServiceRunner,
    run_until_signalled,
)
from services.platform.settings import Settings, SettingsError
from services.platform.telemetry import configure_tracing

Build = Callable[[Infrastructure], Awaitable[ServiceParts]]
EXIT_NATS_CLOSED = 69  # sysexits' EX_UNAVAILABLE: a supervisor starts the service again
EXIT_CONFIG = 78  # sysexits' EX_CONFIG: a setting to correct before starting again
EXIT_BROKEN = 70  # sysexits' EX_SOFTWARE: a task it needs failed; a supervisor starts it again
log = logging.getLogger(__name__)


def parse_args(service: str) -> argparse.Namespace:
    """The command line of a service process."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--grpc-address", default=os.environ.get("A4CO_GRPC_ADDRESS", "127.0.0.1:0"))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("A4CO_METRICS_PORT", "0")))
    parser.add_argument("--ready-file", type=Path, help="write the bound addresses here as JSON when ready")
    return parser.parse_args()


async def serve(service: str, build: Build, schema_sql: str | None, args: argparse.Namespace) -> None:
    """Connect, build the service, serve until signalled."""
    settings = Settings.from_env(service)
    infra = await Infrastructure.connect(settings, schema_sql)
    parts = await build(infra)
    verifier = infra.verifier(settings.public_key()) if settings.jwt_public_key_file else None
    runner = ServiceRunner(infra, parts, verifier=verifier, grpc_address=args.grpc_address)
    metrics_port = args.metrics_port or None

    def ready() -> None:
        document = {
            "service": service,
            "grpc": runner.server.address,
            "metrics_port": metrics_port,
            "pid": os.getpid(),
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        }
        log.info("ready", extra=document)
        freeze_start_up_objects()
        if args.ready_file:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(document))
            tmp.replace(args.ready_file)

    await run_until_signalled(runner, metrics_port=metrics_port, on_ready=ready)


def service_main(service: str, build: Build, schema_file: Path | None) -> None:
    """Run a service process until SIGTERM or SIGINT."""
    cap_arenas()  # before any thread allocates
    configure_logging(service, os.environ.get("A4CO_LOG_LEVEL", "INFO"))
    configure_tracing(service)
    schema_sql = schema_file.read_text() if schema_file else None
    try:
        run_event_loop(serve(service, build, schema_sql, parse_args(service)))
    except ListenError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CANNOT_LISTEN) from None
    except NatsClosedError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_NATS_CLOSED) from None
    except BrokenError:  # logged with its traceback when it happened
        raise SystemExit(EXIT_BROKEN) from None
    except (NatsSettingError, SettingsError) as exc:  # a setting to correct: one line, no traceback
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop (decision 21), or on asyncio's own loop with `A4CO_EVENT_LOOP=asyncio`."""
    choice = os.environ.get("A4CO_EVENT_LOOP", "uvloop")
    if choice not in ("uvloop", "asyncio"):
        main.close()  # never started
        raise SystemExit(f"A4CO_EVENT_LOOP must be uvloop or asyncio, not {choice!r}")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): asyncio's loop
            log.warning("uvloop is not installed; running on asyncio's event loop")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
