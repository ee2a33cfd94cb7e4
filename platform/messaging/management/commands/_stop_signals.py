"""How the bus's long-running commands learn to stop: SIGTERM (docker stop, systemd, a
supervisor) or SIGINT (Ctrl-C). Each finishes what it is doing, then returns."""

import signal
from collections.abc import Callable

#: The signals that ask a process to finish its current work and exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_requested() -> Callable[[], bool]:
    """Catch the stop signals from now on; the returned function says whether one came."""
    received: list[int] = []
    for number in STOP_SIGNALS:
        signal.signal(number, lambda signum, frame: received.append(signum))
    return lambda: bool(received)
