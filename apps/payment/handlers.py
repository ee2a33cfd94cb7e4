"""The command payment handles. Thin: call a service."""

from apps.payment.messages import ProcessPayment
from apps.payment.services import payment_process
from messaging import command_handler


@command_handler(ProcessPayment)
def process_payment(command: ProcessPayment) -> None:
    payment_process(order_id=command.order_id, customer_id=command.customer_id, amount=command.amount)
