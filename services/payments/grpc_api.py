"""payments' gRPC servicer and request rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc

from a4co.payments.v1 import payments_service_pb2 as pb
from a4co.payments.v1 import payments_service_pb2_grpc as pb_grpc
from a4co.type.v1 import money_pb2
from services.payments import handlers
from services.payments.adapters.postgres import PaymentRecord, StoredMethod
from services.payments.domain import Brand, MethodType
from services.platform.auth import current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_page
from services.platform.timestamps import to_timestamp
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["PaymentsService"].full_name
# No card number, CVC, IBAN (34 at most) or phone number comes near this many characters.
MAX_CODE = 64
MAX_HOLDER = 100  # characters of a card or account holder's name
Context = grpc.aio.ServicerContext[Any, Any]

TYPE_TO_PB = {
    MethodType.CARD: pb.PAYMENT_METHOD_TYPE_CARD,
    MethodType.SEPA_DEBIT: pb.PAYMENT_METHOD_TYPE_SEPA_DEBIT,
    MethodType.BIZUM: pb.PAYMENT_METHOD_TYPE_BIZUM,
}
BRAND_TO_PB = {
    Brand.UNKNOWN: pb.CARD_BRAND_UNSPECIFIED,
    Brand.VISA: pb.CARD_BRAND_VISA,
    Brand.MASTERCARD: pb.CARD_BRAND_MASTERCARD,
    Brand.AMEX: pb.CARD_BRAND_AMEX,
    Brand.DISCOVER: pb.CARD_BRAND_DISCOVER,
    Brand.DINERS: pb.CARD_BRAND_DINERS,
    Brand.JCB: pb.CARD_BRAND_JCB,
    Brand.UNIONPAY: pb.CARD_BRAND_UNIONPAY,
    Brand.MAESTRO: pb.CARD_BRAND_MAESTRO,
}
STATUS_TO_PB = {
    "succeeded": pb.PAYMENT_STATUS_SUCCEEDED,
    "failed": pb.PAYMENT_STATUS_FAILED,
    "refunded": pb.PAYMENT_STATUS_REFUNDED,
}


def check_validate(request: pb.ValidatePaymentMethodRequest) -> None:
    """Exactly one method, with the fields it cannot be checked without.

    Whether a present value is right (Luhn, expiry, mod-97) is the answer of the RPC, not an error;
    one far longer than any such value could be is.
    """
    v = Violations()
    kind = request.WhichOneof("method")
    v.check(kind is not None, "method", "set one of card, sepa_debit, bizum")
    if kind == "card":
        v.filled(request.card.number, "card.number", MAX_CODE)
        v.filled(request.card.cvc, "card.cvc", MAX_CODE)
        v.required(request.card.exp_month, "card.exp_month")
        v.required(request.card.exp_year, "card.exp_year")
        v.at_most(request.card.holder_name, "card.holder_name", MAX_HOLDER)
    elif kind == "sepa_debit":
        v.filled(request.sepa_debit.iban, "sepa_debit.iban", MAX_CODE)
        v.filled(request.sepa_debit.account_holder, "sepa_debit.account_holder", MAX_HOLDER)
    elif kind == "bizum":
        v.filled(request.bizum.phone_number, "bizum.phone_number", MAX_CODE)
    v.raise_if_any()


def check_get_payment(request: pb.GetPaymentRequest) -> None:
    """The order is required."""
    v = Violations()
    v.key(request.order_id, "order_id")
    v.raise_if_any()


def check_get_method(request: pb.GetPaymentMethodRequest) -> None:
    """The method is required."""
    v = Violations()
    v.key(request.payment_method_id, "payment_method_id")
    v.raise_if_any()


def check_list_methods(request: pb.ListPaymentMethodsRequest) -> None:
    """A page, and a customer's id if one is named."""
    v = Violations()
    check_page(v, request)
    v.at_most(request.customer_id, "customer_id", MAX_KEY)
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/ValidatePaymentMethod": MethodPolicy(validator=check_validate),
    f"/{SERVICE}/GetPayment": MethodPolicy(validator=check_get_payment),
    f"/{SERVICE}/GetPaymentMethod": MethodPolicy(validator=check_get_method),
    f"/{SERVICE}/ListPaymentMethods": MethodPolicy(validator=check_list_methods),
    f"/{SERVICE}/DeletePaymentMethod": MethodPolicy(validator=check_get_method),
}


def method_to_pb(m: StoredMethod) -> pb.PaymentMethod:
    """A stored method as a message: never its token."""
    message = pb.PaymentMethod(
        payment_method_id=m.payment_method_id,
        customer_id=m.customer_id,
        method_type=TYPE_TO_PB[m.method_type],
        card_brand=BRAND_TO_PB[m.brand],
        last_four=m.last_four,
    )
    if m.created_at is not None:
        message.create_time.CopyFrom(to_timestamp(m.created_at))
    if m.deleted_at is not None:
        message.delete_time.CopyFrom(to_timestamp(m.deleted_at))
    return message


def money(cents: int, currency: str) -> money_pb2.Money:
    """Money as a message."""
    return money_pb2.Money(currency_code=currency, amount_cents=cents)


def payment_to_pb(p: PaymentRecord) -> pb.Payment:
    """A payment as a message."""
    return pb.Payment(
        payment_id=p.payment_id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        amount=money(p.amount_cents, p.currency_code),
        refunded=money(p.refunded_cents, p.currency_code),
        status=STATUS_TO_PB[p.status],
        method_type=TYPE_TO_PB.get(MethodType(p.method_type), pb.PAYMENT_METHOD_TYPE_UNSPECIFIED)
        if p.method_type
        else pb.PAYMENT_METHOD_TYPE_UNSPECIFIED,
        last_four=p.last_four,
        failure_reason=p.failure_reason,
        create_time=to_timestamp(p.created_at),
        update_time=to_timestamp(p.updated_at),
    )


class PaymentsServicer(pb_grpc.PaymentsServiceServicer):
    """The PaymentsService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def ValidatePaymentMethod(
        self, request: pb.ValidatePaymentMethodRequest, context: Context
    ) -> pb.ValidatePaymentMethodResponse:
        """Check, and keep as a token when valid."""
        kind = request.WhichOneof("method")
        card = None
        if kind == "card":
            c = request.card
            card = handlers.CardInput(c.number, c.exp_month, c.exp_year, c.cvc)
        verdict, method_id = await handlers.validate_method(
            self.deps,
            current_principal(),
            card=card,
            iban=request.sepa_debit.iban if kind == "sepa_debit" else None,
            phone=request.bizum.phone_number if kind == "bizum" else None,
        )
        return pb.ValidatePaymentMethodResponse(
            valid=verdict.valid,
            problems=[
                pb.PaymentMethodProblem(field=p.field, reason=p.reason, description=p.description)
                for p in verdict.problems
            ],
            method_type=TYPE_TO_PB[verdict.method_type],
            card_brand=BRAND_TO_PB[verdict.brand],
            last_four=verdict.last_four,
            payment_method_id=method_id,
        )

    async def GetPaymentMethod(
        self, request: pb.GetPaymentMethodRequest, context: Context
    ) -> pb.GetPaymentMethodResponse:
        """A stored method, by id."""
        m = await handlers.get_method(self.deps, current_principal(), request.payment_method_id)
        return pb.GetPaymentMethodResponse(payment_method=method_to_pb(m))

    async def ListPaymentMethods(
        self, request: pb.ListPaymentMethodsRequest, context: Context
    ) -> pb.ListPaymentMethodsResponse:
        """A customer's saved methods, newest first."""
        page = Page.of(request, ("payment_methods", request.customer_id))
        found, token = page.split(
            await handlers.list_methods(self.deps, current_principal(), request.customer_id, page),
            _position,
        )
        return pb.ListPaymentMethodsResponse(
            payment_methods=[method_to_pb(m) for m in found], next_page_token=token
        )

    async def DeletePaymentMethod(
        self, request: pb.DeletePaymentMethodRequest, context: Context
    ) -> pb.DeletePaymentMethodResponse:
        """Delete a saved method."""
        m = await handlers.delete_method(self.deps, current_principal(), request.payment_method_id)
        return pb.DeletePaymentMethodResponse(payment_method=method_to_pb(m))

    async def GetPayment(self, request: pb.GetPaymentRequest, context: Context) -> pb.GetPaymentResponse:
        """An order's payment."""
        payment = await handlers.get_payment(self.deps, current_principal(), request.order_id)
        return pb.GetPaymentResponse(payment=payment_to_pb(payment))


def _position(m: StoredMethod) -> tuple[datetime, str]:
    """Where a listed method stands in ListPaymentMethods' order (a stored method has its time)."""
    assert m.created_at is not None
    return m.created_at, m.payment_method_id


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves payments."""
    servicer = PaymentsServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_PaymentsServiceServicer_to_server(servicer, server)
    )
