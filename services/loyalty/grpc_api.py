"""loyalty's gRPC servicer."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.loyalty.v1 import loyalty_service_pb2 as pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as pb_grpc
from services.loyalty import handlers
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_page
from services.platform.timestamps import to_timestamp
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["LoyaltyService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def check_balance(request: pb.GetBalanceRequest) -> None:
    """A user id, when given, is short."""
    v = Violations()
    v.at_most(request.user_id, "user_id", MAX_KEY)
    v.raise_if_any()


def check_ledger(request: pb.ListLedgerEntriesRequest) -> None:
    """A short user id, when given, and a page."""
    v = Violations()
    v.at_most(request.user_id, "user_id", MAX_KEY)
    check_page(v, request, uuid_keys=False)
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/GetBalance": MethodPolicy(validator=check_balance),
    f"/{SERVICE}/ListLedgerEntries": MethodPolicy(validator=check_ledger),
}
KINDS = {
    "welcome": pb.ENTRY_KIND_WELCOME,
    "purchase": pb.ENTRY_KIND_PURCHASE,
    "revocation": pb.ENTRY_KIND_REVOCATION,
    "redemption": pb.ENTRY_KIND_REDEMPTION,
    "restoration": pb.ENTRY_KIND_RESTORATION,
}


class LoyaltyServicer(pb_grpc.LoyaltyServiceServicer):
    """The LoyaltyService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Context) -> pb.GetBalanceResponse:
        """A user's points."""
        b = await handlers.balance(self.deps, current_principal(), request.user_id)
        return pb.GetBalanceResponse(
            user_id=b.user_id,
            points=b.points,
            lifetime_points=b.lifetime_points,
            entry_count=b.entries,
            update_time=to_timestamp(b.updated_at),
        )

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        """A user's ledger, newest first."""
        page = Page.of(request, ("ledger", request.user_id), uuid_keys=False)
        found, token = page.split(
            await handlers.ledger(self.deps, current_principal(), request.user_id, page),
            lambda e: (e.created_at, e.key),
        )
        response = pb.ListLedgerEntriesResponse(next_page_token=token)
        for e in found:
            entry = response.entries.add(kind=KINDS[e.kind], points=e.points, order_id=e.order_id)
            entry.create_time.CopyFrom(to_timestamp(e.created_at))
        return response


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves loyalty."""
    servicer = LoyaltyServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_LoyaltyServiceServicer_to_server(servicer, server)
    )
