"""Which methods the platform layer wraps: unary and server-streaming ones with a policy; one
with a policy that it cannot serve stops the server from starting, rather than go unguarded."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.platform.grpc.interceptor import MethodPolicy, PlatformInterceptor


def interceptor() -> PlatformInterceptor:
    policies = {f"/s.S/{name}": MethodPolicy() for name in ("Unary", "Stream", "Upload")}
    return PlatformInterceptor(service="s", domain="s.a4co", policies=policies, verifier=None)


async def unary(request: Any, context: Any) -> Any:
    return request


async def stream(request: Any, context: Any) -> Any:
    yield request


async def upload(requests: Any, context: Any) -> Any:
    return None


def test_unary_and_server_streaming_methods_are_wrapped() -> None:
    layer = interceptor()
    wrapped = layer.wrap("/s.S/Unary", grpc.unary_unary_rpc_method_handler(unary))
    assert wrapped.unary_unary is not unary
    wrapped = layer.wrap("/s.S/Stream", grpc.unary_stream_rpc_method_handler(stream))
    assert wrapped.unary_stream is not stream
    assert wrapped.unary_stream is not None


def test_a_method_without_a_policy_passes_as_it_is() -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(unary)
    assert interceptor().wrap("/grpc.health.v1.Health/Check", handler) is handler


def test_a_client_streaming_method_with_a_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unary and server-streaming methods only"):
        interceptor().wrap("/s.S/Upload", grpc.stream_unary_rpc_method_handler(upload))
