"""identity's gRPC servicer: translate, call a use case, translate back."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.identity.v1 import identity_service_pb2 as pb
from a4co.identity.v1 import identity_service_pb2_grpc as pb_grpc
from services.identity import handlers
from services.identity.adapters.mapping import (
    ROLE_FROM_PB,
    ROLE_TO_PB,
    address_from_pb,
    changes_from_pb,
    tokens_to_pb,
    user_to_pb,
)
from services.identity.domain import (
    PASSWORD_MAX,
    check_delete_account,
    check_new_password,
    check_reset,
    check_reset_request,
)
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_list
from services.platform.timestamps import to_timestamp
from services.platform.validation import MAX_EMAIL, MAX_TOKEN, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def check_login(request: pb.LoginRequest) -> None:
    """Both credentials, no longer than a sign-up allows."""
    v = Violations()
    v.filled(request.email, "email", MAX_EMAIL)
    v.filled(request.password, "password", PASSWORD_MAX)
    v.raise_if_any()


def check_token_request(request: pb.ValidateTokenRequest | pb.RefreshTokenRequest) -> None:
    """The token to check, no longer than this API's tokens."""
    v = Violations()
    field = "access_token" if isinstance(request, pb.ValidateTokenRequest) else "refresh_token"
    v.filled(getattr(request, field), field, MAX_TOKEN)
    v.raise_if_any()


def check_user_id(v: Violations, user_id: str) -> None:
    """A user id, when given, is a UUID."""
    if user_id:
        v.uuid(user_id, "user_id")


def check_get_profile(request: pb.GetProfileRequest) -> None:
    """An empty user id means the caller; an e-mail address names a user instead of the id."""
    v = Violations()
    check_user_id(v, request.user_id)
    v.at_most(request.email, "email", MAX_EMAIL)
    v.check(not (request.user_id and request.email), "email", "name the user by id or by address, not both")
    v.raise_if_any()


def check_update(request: pb.UpdateProfileRequest) -> None:
    """An update names what it changes."""
    v = Violations()
    check_user_id(v, request.user_id)
    v.check(bool(request.update_mask.paths), "update_mask", "must name at least one field")
    v.raise_if_any()


def check_change_password(request: pb.ChangePasswordRequest) -> None:
    """The current password and a new one that may be a password (`check_new_password`)."""
    check_new_password(request.current_password, request.new_password)


def check_request_password_reset(request: pb.RequestPasswordResetRequest) -> None:
    """An e-mail address (`check_reset_request`)."""
    check_reset_request(request.email)


def check_reset_password(request: pb.ResetPasswordRequest) -> None:
    """The address, a code and a new password that may be a password (`check_reset`)."""
    check_reset(request.email, request.code, request.new_password)


def check_delete(request: pb.DeleteAccountRequest) -> None:
    """The account's password (`check_delete_account`), or a user's id, which only an admin names
    (checked with the caller's role) and which needs no password."""
    if request.user_id:
        v = Violations()
        v.uuid(request.user_id, "user_id")
        v.at_most(request.current_password, "current_password", PASSWORD_MAX)
        v.raise_if_any()
    else:
        check_delete_account(request.current_password)


def check_end_session(request: pb.EndSessionRequest) -> None:
    """A session's id."""
    v = Violations()
    v.uuid(request.session_id, "session_id")
    v.raise_if_any()


def _client(context: Context) -> str:
    """The user-agent the calling client sent (gRPC's own, unless the client set one)."""
    return next((str(value) for key, value in context.invocation_metadata() or () if key == "user-agent"), "")


POLICIES = {
    _method("Register"): MethodPolicy(public=True),
    _method("Login"): MethodPolicy(public=True, validator=check_login),
    _method("ValidateToken"): MethodPolicy(public=True, validator=check_token_request),
    _method("RefreshToken"): MethodPolicy(public=True, validator=check_token_request),
    _method("Logout"): MethodPolicy(),
    _method("GetProfile"): MethodPolicy(validator=check_get_profile),
    _method("UpdateProfile"): MethodPolicy(validator=check_update),
    _method("ChangePassword"): MethodPolicy(validator=check_change_password),
    _method("RequestPasswordReset"): MethodPolicy(public=True, validator=check_request_password_reset),
    _method("ResetPassword"): MethodPolicy(public=True, validator=check_reset_password),
    _method("DeleteAccount"): MethodPolicy(validator=check_delete),
    _method("ListSessions"): MethodPolicy(validator=check_list),
    _method("EndSession"): MethodPolicy(validator=check_end_session),
}


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    """The IdentityService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        """Sign up."""
        user, tokens = await handlers.register(
            self.deps,
            request.email,
            request.password,
            request.display_name,
            ROLE_FROM_PB.get(request.role),
            request.phone_number,
            address_from_pb(request.address),
            _client(context),
        )
        return pb.RegisterResponse(user=user_to_pb(user), tokens=tokens_to_pb(tokens))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        """Sign in."""
        user, tokens = await handlers.login(self.deps, request.email, request.password, _client(context))
        return pb.LoginResponse(tokens=tokens_to_pb(tokens), user=user_to_pb(user))

    async def ValidateToken(
        self, request: pb.ValidateTokenRequest, context: Context
    ) -> pb.ValidateTokenResponse:
        """Check an access token, revocation included."""
        principal = await self.deps.verifier.verify(request.access_token)
        expire = to_timestamp(None)
        expire.FromSeconds(int(principal.expires_at))
        return pb.ValidateTokenResponse(
            user_id=principal.user_id,
            role=ROLE_TO_PB[principal.role],
            session_id=principal.session_id,
            expire_time=expire,
        )

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Context
    ) -> pb.RefreshTokenResponse:
        """Rotate the refresh token."""
        tokens = await handlers.refresh_tokens(self.deps, request.refresh_token)
        return pb.RefreshTokenResponse(tokens=tokens_to_pb(tokens))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        """End the caller's session."""
        await handlers.logout(self.deps, current_principal())
        return pb.LogoutResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Context
    ) -> pb.ChangePasswordResponse:
        """Replace the caller's password."""
        ended = await handlers.change_password(
            self.deps, current_principal(), request.current_password, request.new_password
        )
        return pb.ChangePasswordResponse(ended_sessions=ended)

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Context
    ) -> pb.RequestPasswordResetResponse:
        """E-mail a code that resets a forgotten password."""
        expires = await handlers.request_password_reset(self.deps, request.email)
        return pb.RequestPasswordResetResponse(expire_time=to_timestamp(expires))

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: Context
    ) -> pb.ResetPasswordResponse:
        """Set a new password with an e-mailed code, and start a session."""
        user, tokens, ended = await handlers.reset_password(
            self.deps, request.email, request.code, request.new_password, _client(context)
        )
        return pb.ResetPasswordResponse(
            tokens=tokens_to_pb(tokens), user=user_to_pb(user), ended_sessions=ended
        )

    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: Context
    ) -> pb.DeleteAccountResponse:
        """Close the caller's account."""
        when, ended = await handlers.delete_account(
            self.deps, current_principal(), request.current_password, request.user_id
        )
        return pb.DeleteAccountResponse(delete_time=to_timestamp(when), ended_sessions=ended)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        """The caller's sessions not ended, newest first."""
        principal = current_principal()
        page = Page.of(request, ("sessions",))
        found, token = page.split(
            await handlers.list_sessions(self.deps, principal, page), lambda s: (s.created_at, s.session_id)
        )
        return pb.ListSessionsResponse(
            sessions=[
                pb.Session(
                    session_id=s.session_id,
                    create_time=to_timestamp(s.created_at),
                    refresh_time=to_timestamp(s.refreshed_at),
                    expire_time=to_timestamp(s.expires_at),
                    user_agent=s.user_agent,
                    current=s.session_id == principal.session_id,
                )
                for s in found
            ],
            next_page_token=token,
        )

    async def EndSession(self, request: pb.EndSessionRequest, context: Context) -> pb.EndSessionResponse:
        """End one of the caller's sessions."""
        await handlers.end_session(self.deps, current_principal(), request.session_id)
        return pb.EndSessionResponse()

    async def GetProfile(self, request: pb.GetProfileRequest, context: Context) -> pb.GetProfileResponse:
        """A private profile."""
        user = await handlers.get_profile(self.deps, current_principal(), request.user_id, request.email)
        return pb.GetProfileResponse(user=user_to_pb(user))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        """Change a profile."""
        user = await handlers.update_profile(
            self.deps,
            current_principal(),
            request.user_id,
            changes_from_pb(request.user),
            list(request.update_mask.paths),
        )
        return pb.UpdateProfileResponse(user=user_to_pb(user))


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves identity."""
    servicer = IdentityServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    )
