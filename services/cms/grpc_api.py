"""cms' gRPC servicer."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.cms.v1 import cms_service_pb2 as pb
from a4co.cms.v1 import cms_service_pb2_grpc as pb_grpc
from services.cms import handlers
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.timestamps import optional_timestamp, to_timestamp
from services.platform.validation import Violations

SERVICE = pb.DESCRIPTOR.services_by_name["CmsService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
KINDS = {"customer": pb.PROFILE_KIND_CUSTOMER, "artisan": pb.PROFILE_KIND_ARTISAN}


def check_profile(request: pb.GetPublicProfileRequest) -> None:
    """The user is required."""
    v = Violations()
    v.key(request.user_id, "user_id")
    v.raise_if_any()


POLICIES = {f"/{SERVICE}/GetPublicProfile": MethodPolicy(public=True, validator=check_profile)}


class CmsServicer(pb_grpc.CmsServiceServicer):
    """The CmsService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def GetPublicProfile(
        self, request: pb.GetPublicProfileRequest, context: Context
    ) -> pb.GetPublicProfileResponse:
        """A public page."""
        p = await handlers.public_profile(self.deps, request.user_id)
        return pb.GetPublicProfileResponse(
            profile=pb.PublicProfile(
                user_id=p.user_id,
                display_name=p.display_name,
                kind=KINDS[p.kind],
                bio=p.bio,
                craft=p.craft,
                locality=p.locality,
                member_since=to_timestamp(p.member_since),
                offboard_time=optional_timestamp(p.offboard_time),
            )
        )


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves cms."""
    servicer = CmsServicer(deps)
    return Registration(SERVICE, lambda server: pb_grpc.add_CmsServiceServicer_to_server(servicer, server))
