"""Payment operations. Each owns its transaction and writes its outbox rows in it."""

import uuid
from decimal import Decimal

from django.db import transaction

from apps.payment import app_settings
from apps.payment.messages import PaymentFailed, PaymentRefunded, PaymentSucceeded
from apps.payment.models import Payment
from messaging import Outbox

#: Every message written here is this context's (its ``source``).
outbox = Outbox.for_module(__name__)


class PaymentProviderUnavailableError(Exception):
    """The payment provider cannot be reached: nothing was charged or refunded. Raised while
    ``PAYMENT_PROVIDER_OUTAGE`` is on, so that the delivery is retried, then dead-lettered."""


def _reach_the_provider(*, order_id: uuid.UUID, act: str) -> None:
    # The reference context has no real provider: only the demonstration switch can make it fail.
    if app_settings.provider_outage():
        raise PaymentProviderUnavailableError(
            f"the payment provider is unavailable (PAYMENT_PROVIDER_OUTAGE is on): cannot {act} order {order_id}"
        )


def payment_process(*, order_id: uuid.UUID, customer_id: str, amount: Decimal) -> Payment:
    """Charge an order once. Amounts over the approval limit (``PAYMENT_APPROVAL_LIMIT``) are declined;
    while the provider is down (``PAYMENT_PROVIDER_OUTAGE``) a charge raises ``PaymentProviderUnavailableError``."""
    with transaction.atomic():
        payment = Payment.objects.filter(order_id=order_id).first()
        if payment is None:
            limit = app_settings.approval_limit()
            declined = amount > limit
            if not declined:
                _reach_the_provider(order_id=order_id, act="charge")
            payment = Payment.objects.create(
                order_id=order_id,
                customer_id=customer_id,
                amount=amount,
                status=Payment.Status.DECLINED if declined else Payment.Status.SUCCEEDED,
                decline_reason=f"amount over the approval limit of {limit}"
                if declined else "",
            )
        # Asked again for a charged order: the same answer, never a second charge.
        if payment.status == Payment.Status.SUCCEEDED:
            outbox.publish(PaymentSucceeded(order_id=order_id, amount=payment.amount))
        else:
            outbox.publish(PaymentFailed(order_id=order_id, reason=payment.decline_reason or payment.status))
    return payment


def payment_refund(*, order_id: uuid.UUID) -> None:
    """Give back a succeeded payment, once; anything else (declined, refunded already) is left as it is."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
        if payment is None or payment.status != Payment.Status.SUCCEEDED:
            return
        _reach_the_provider(order_id=order_id, act="refund")
        payment.status = Payment.Status.REFUNDED
        payment.save(update_fields=["status"])
        outbox.publish(PaymentRefunded(order_id=order_id, amount=payment.amount))
