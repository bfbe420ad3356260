"""Assertions on gRPC calls."""

from __future__ import annotations

import grpc
import pytest


async def failure(call: object) -> grpc.aio.AioRpcError:
    """Await a call that must fail, and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value
