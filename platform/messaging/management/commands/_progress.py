"""Progress of a long command: done/total, as a bar redrawn in place on a terminal, and as
plain lines every few seconds when the output is a file or a log (no control characters)."""

from time import monotonic

#: Characters of the bar on a terminal.
BAR_WIDTH = 30
#: Seconds between two lines when the output is not a terminal.
LINE_INTERVAL = 5.0


class Progress:
    """``update(done)`` as work advances, ``close()`` at the end (the last count is always shown)."""

    def __init__(self, stdout, *, total: int, label: str) -> None:
        self.stdout, self.total, self.label = stdout, total, label
        self.on_terminal = stdout.isatty()
        self.done, self.started, self._last_line = 0, monotonic(), None

    def update(self, done: int) -> None:
        self.done = done
        if self.on_terminal:
            self.stdout.write(f"\r{self._bar()}", ending="")
            self.stdout.flush()
        elif self._last_line is None or monotonic() - self._last_line >= LINE_INTERVAL or done >= self.total:
            self._last_line = monotonic()
            self.stdout.write(f"{self.label}: {self._count()}")

    def close(self) -> None:
        if self.on_terminal:
            self.stdout.write(f"\r{self._bar()}")  # ends the line the bar was redrawn on
        elif self._last_line is None or self.done < self.total:
            self.stdout.write(f"{self.label}: {self._count()}")

    def _count(self) -> str:
        percent = 100 * self.done // self.total if self.total else 100
        elapsed = monotonic() - self.started
        rate = f", {self.done / elapsed:.1f}/s" if elapsed > 0 and self.done else ""
        return f"{self.done}/{self.total} ({percent}%{rate})"

    def _bar(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        return f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self._count()}"
