"""The commands payment handles. Thin: call a service."""

from apps.payment.messages import ProcessPayment, RefundPayment
from apps.payment.services import payment_process, payment_refund
from messaging import command_handler


@command_handler(ProcessPayment)
def process_payment(command: ProcessPayment) -> None:
    payment_process(order_id=command.order_id, customer_id=command.customer_id, amount=command.amount)


@command_handler(RefundPayment)
def refund_payment(command: RefundPayment) -> None:
    payment_refund(order_id=command.order_id)
