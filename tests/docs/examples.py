"""The shell examples of README.md and docs/: found, and sorted into run, run elsewhere, or not run.

An example is a fenced ``sh``, ``bash`` or ``console`` block. Just before it, a
marker may say who runs it or why nobody does:

    <!-- example: run by tests/e2e/test_embedded_platform.py -->
    <!-- example: not run (needs a Docker engine) -->

An unmarked example is run by ``tests/docs/test_examples.py``, so it may hold
only commands that are cheap and safe on a scratch embedded platform (``SAFE``).
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A fenced shell block, with the marker comment right before it, if any.
BLOCK = re.compile(
    r"(?:<!--\s*example:\s*(?P<marker>[^\n]*?)\s*-->[ \t]*\n)?"
    r"^```(?P<lang>sh|bash|console)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
RUN_BY = re.compile(r"^run by (?P<path>\S+)$")
NOT_RUN = re.compile(r"^not run \((?P<reason>.+)\)$")
#: Pages written by a program, which a marker in them would not survive: the marker of each
#: of their examples.
WRITTEN_PAGES = {
    "docs/benchmarks.md": "run by tests/bench/test_bench_smoke.py",  # written by bench/run
    "docs/chaos.md": "run by tests/integration/test_chaos_soak.py",  # the chaos soak's record
}

#: ``manage.py`` subcommands an example may run on a scratch embedded platform, each
#: with the arguments that make it safe (None: any arguments).
SAFE_MANAGE_COMMANDS = {
    "help": None,
    "check": None,
    "migrate": None,
    "bus_topology": None,
    "bus_contracts": ("check",),
    "send_command": None,
    "publish_event": None,
    "purge_bus_tables": None,
    "republish_outbox": None,
    "seed_demo": None,
    "dead_letters": ("list",),
    "run_platform": ("--help",),
}
#: Other programs an example may run: the test command's help, and writing a file.
SAFE_PROGRAMS = {"echo", "cat", "scripts/test"}


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    lang: str
    body: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The block's command lines: continuation lines joined, console output dropped."""
        lines = self.body.splitlines()
        if self.lang == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
        return [line for line in text.splitlines() if programs(line)]


def examples() -> list[Example]:
    """Every shell example of README.md and docs/**/*.md, in file order."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            marker = match["marker"] or WRITTEN_PAGES.get(str(path.relative_to(ROOT)))
            found.append(Example(path, text.count("\n", 0, match.start("lang")) + 1, match["lang"],
                                 match["body"], marker))
    return found


def programs(command: str) -> list[list[str]]:
    """The words of each program of a command line: split on ``&&``, ``|``, ``;``, without
    redirections, environment assignments or comments, as the shell reads it."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    result, words, redirected = [], [], False
    for token in lexer:
        if token in ("&&", "||", "|", ";", "&"):
            result.append(words)
            words, redirected = [], False
        elif token in (">", ">>", "<", "2>"):
            redirected = True
        elif redirected:
            redirected = False  # the file name after a redirection
        elif not words and re.match(r"^[A-Z_][A-Z0-9_]*=", token):
            continue  # VAR=value before the program
        else:
            words.append(token)
    result.append(words)
    return [w for w in result if w]


def manage_subcommand(words: list[str]) -> tuple[str, list[str]] | None:
    """(``run_platform``, its arguments) for ``python manage.py run_platform ...``, else None."""
    if len(words) >= 3 and words[0] == "python" and words[1] == "manage.py":
        return words[2], words[3:]
    return None


def why_not_runnable(example: Example) -> str | None:
    """Why the test cannot run this example as it stands, or None if it can."""
    for command in example.commands():
        for words in programs(command):
            manage = manage_subcommand(words)
            if manage is not None:
                name, arguments = manage
                if name not in SAFE_MANAGE_COMMANDS:
                    return f"manage.py {name} is not among the commands the docs test runs"
                needed = SAFE_MANAGE_COMMANDS[name]
                if needed is not None and not set(needed) & set(arguments):
                    return f"manage.py {name} runs here only with one of {needed}"
            elif words[0] == "scripts/test":
                if words[1:] != ["--help"]:
                    return "scripts/test runs the whole suite"
            elif words[0] not in SAFE_PROGRAMS:
                return f"{words[0]} is not among the programs the docs test runs"
        if re.search(r"<[a-z]", command):
            return "it has a <placeholder>"
    return None


def keys(example: Example) -> set[str]:
    """What a test that runs this example must mention: its manage.py subcommands, else its programs."""
    words = [w for command in example.commands() for w in programs(command)]
    # eval "$(scripts/services)": the program is the one inside.
    words = [programs(w[1].removeprefix("$(").removesuffix(")"))[0] if w[0] == "eval" and len(w) > 1 else w
             for w in words]
    subcommands = {m[0] for m in map(manage_subcommand, words) if m}
    return subcommands or {w[2] if w[:2] == ["python", "-m"] and len(w) > 2 else w[0] for w in words}
