"""Asking identity whether a session has ended, for a service whose Redis fails (decision 34).

Revocations are read from Redis on every authenticated call. While Redis fails, a service asks
identity's ValidateToken instead: identity answers from PostgreSQL, the store of record of its
sessions. The call goes through the strategy's circuit breaker and deadline (`PeerClient`); an
identity that does not answer makes the call UNAVAILABLE, as Redis failing did before.
"""

from __future__ import annotations

import grpc

from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from services.platform.auth import Principal, RevocationFallback
from services.platform.errors import UnavailableError
from services.platform.grpc.client import PeerClient

ASK_TIMEOUT_S = 1.0


def ask_identity(client: PeerClient) -> RevocationFallback:
    """Whether a principal's session has ended, as identity's ValidateToken says."""

    async def ended(principal: Principal) -> bool:
        request = identity_pb.ValidateTokenRequest(access_token=principal.token)
        stub = client.stub(identity_grpc.IdentityServiceStub)
        try:
            await client.call(stub.ValidateToken, request, timeout_s=ASK_TIMEOUT_S, idempotent=True)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True  # revoked: the signature and expiry were checked here already
            raise UnavailableError(
                "DEPENDENCY_UNAVAILABLE",
                "a dependency of this service is unavailable",
                metadata={"peer": client.peer},
            ) from err
        return False

    return ended
