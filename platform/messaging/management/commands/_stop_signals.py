"""How the bus's long-running commands learn to stop: SIGTERM (docker stop, systemd, a
supervisor) or SIGINT (Ctrl-C). Each finishes what it is doing, then returns."""

import contextlib
import signal
from collections.abc import Callable, Iterator

#: The signals that ask a process to finish its current work and exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_requested() -> Callable[[], bool]:
    """Catch the stop signals from now on; the returned function says whether one came."""
    received: list[int] = []

    def request_stop(signum, frame) -> None:
        received.append(signum)
        # Asked once is asked: a second signal (a supervisor repeating itself, Ctrl-C twice)
        # changes nothing. Ignored rather than caught, it cannot arrive while the interpreter
        # shuts down, which gives a caught signal its default action back: the process then
        # died of it (exit -15) after it had stopped cleanly.
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)

    for number in STOP_SIGNALS:
        signal.signal(number, request_stop)
    return lambda: bool(received)


@contextlib.contextmanager
def stop_signals_caught() -> Iterator[Callable[[], bool]]:
    """``stop_requested`` for a command whose work ends before its process does: the
    signals are given back to their former handlers on leaving (Ctrl-C stops a shell's
    ``call_command`` again once the command has returned)."""
    former = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    try:
        yield stop_requested()
    finally:
        for number, handler in former.items():
            signal.signal(number, handler)
