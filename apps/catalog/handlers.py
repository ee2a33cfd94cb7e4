"""Commands the catalog handles. Thin: call a service."""

from apps.catalog.messages import ReleaseStock, ReserveStock
from apps.catalog.services import stock_release, stock_reserve
from messaging import command_handler


@command_handler(ReserveStock)
def reserve_stock(command: ReserveStock) -> None:
    stock_reserve(order_id=command.order_id, lines=command.lines)


@command_handler(ReleaseStock)
def release_stock(command: ReleaseStock) -> None:
    stock_release(order_id=command.order_id)
