"""MkDocs hooks: reference pages made from the code, so they cannot drift from it.

- The settings reference (``reference/settings.md``) has its tables generated from
  the settings modules' source (``platform/config/settings/*.py``) and the contexts'
  ``apps/*/app_settings.py``: every setting, the environment variable it is read
  from, its default, and the ``#:`` comment that says why. Read with ``ast``, never
  imported: the build needs no Django, no database and no network.
- ``benchmarks.md`` is written by ``bench/run`` with links into ``bench/results/``;
  those files are added to the site and the links pointed at them, the page's text
  unchanged.

A setting read from the environment whose reason cannot be found is a warning,
which ``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

#: The repository root (this file is docs/hooks/reference.py).
ROOT = Path(__file__).resolve().parents[2]
#: Where the settings reference's generated tables go.
SETTINGS_MARKER = "<!-- settings: generated from platform/config/settings and apps/*/app_settings.py -->"
#: Files outside docs/ that a page links to and the site carries.
OUTSIDE_FOLDERS = ("bench/results",)
#: The settings modules in the order an environment builds on them.
SETTINGS_ORDER = ("base", "local", "test", "production")
#: Calls that read an environment variable: ``env("X")``, ``env.int("X")``,
#: ``env_duration("X")``, ``required("X")`` (production's must-be-set).
READERS = {"env", "env_duration", "required"}
#: A section heading comment in a settings module: ``# CELERY``, ``# HEALTH (...)``.
SECTION = re.compile(r"^# ([A-Z][A-Z ]+)(?: \((.*)\))?$")
#: Longest value shown whole; longer ones are summarised.
LONGEST_VALUE = 70

log = logging.getLogger("mkdocs.hooks.reference")


@dataclass
class Setting:
    name: str
    variable: str  # the environment variable, or "" when fixed in code
    default: str
    reason: str


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    link: str = ""
    settings: list[Setting] = field(default_factory=list)


# ----------------------------------------------------------------- reading the source


def _comment_block(lines: list[str], lineno: int) -> list[str]:
    """The comment lines directly above line ``lineno`` (1-based), top first."""
    block, index = [], lineno - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip())
        index -= 1
    return block


def _reason_of(block: list[str]) -> str:
    """The ``#:`` lines of a comment block (the settings' reasons), else its plain prose."""
    documented = [line[2:].strip() for line in block if line.startswith("#:")]
    if documented:
        return " ".join(documented)
    prose = [line[1:].strip() for line in block
             if not SECTION.match(line) and "://" not in line and not line.startswith("#:")]
    return " ".join(prose)


def _is_reader(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in READERS
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"


def _env_reads(node: ast.AST) -> list[ast.Call]:
    """Every call in ``node`` that reads an environment variable named by a literal."""
    return [
        call for call in ast.walk(node)
        if isinstance(call, ast.Call) and _is_reader(call) and call.args
        and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
    ]


def _number(node: ast.AST):
    """The value of an arithmetic expression of literals, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _number(node.left), _number(node.right)
        if left is not None and right is not None:
            operations = {ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b,
                          ast.Sub: lambda a, b: a - b}
            operation = operations.get(type(node.op))
            return operation(left, right) if operation else None
    return None


def _show(node: ast.AST | None, source: str) -> str:
    """A default as a reader wants it: ``262144 (256 * 1024)``, ``7 days``, the code otherwise."""
    if node is None:
        return "required"
    text = ast.get_source_segment(source, node) or ""
    value = _number(node)
    if value is not None and not isinstance(node, ast.Constant):
        return f"`{value}` (`{text}`)"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "timedelta"
            and not node.args and all(isinstance(k.value, ast.Constant) for k in node.keywords)):
        return ", ".join(f"{k.value.value} {k.arg if k.value.value != 1 else k.arg[:-1]}" for k in node.keywords)
    if len(text) > LONGEST_VALUE:
        kind = {ast.List: "a list", ast.Dict: "a dict", ast.Tuple: "a tuple"}.get(type(node), "an expression")
        return f"{kind}: see the module"
    return f"`{text}`"


def _default_of(call: ast.Call, source: str) -> str:
    if isinstance(call.func, ast.Name) and call.func.id == "required":
        return "required: no default"
    default = next((k.value for k in call.keywords if k.arg == "default"), None)
    if default is None and len(call.args) > 1:
        default = call.args[1]
    return _show(default, source)


def _names(statement: ast.stmt) -> list[str]:
    targets = statement.targets if isinstance(statement, ast.Assign) else getattr(statement, "target", None)
    targets = targets if isinstance(targets, list) else [targets] if targets is not None else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _belongs_to(statement: ast.stmt, head: ast.stmt, reason: str, source: str) -> bool:
    """Whether a statement without a comment shares the reason of the commented one it
    follows without a blank line: ``CELERY_TASK_SOFT_TIME_LIMIT`` under
    ``CELERY_TASK_TIME_LIMIT``'s, but not ``CELERY_TIMEZONE``. The same two first words,
    or its name or its value named in the reason."""
    if not isinstance(head, (ast.Assign, ast.AnnAssign)) or not isinstance(statement, (ast.Assign, ast.AnnAssign)):
        return True  # inside a function: the comment speaks for the lines below it
    heads, names = _names(head), _names(statement)
    if any(n.split("_")[:2] == h.split("_")[:2] and "_" in n for n in names for h in heads):
        return True
    if any(n in reason for n in names):
        return True
    value = re.sub(r"[\[\]\"' ]", "", ast.get_source_segment(source, statement.value) or "").lower()
    return len(value) > 2 and value in reason.lower()


def _inherited_reasons(body: list[ast.stmt], lines: list[str], source: str) -> dict[int, str]:
    """Each statement's reason: its own comment block, or that of the commented
    statement it follows without a blank line, when it belongs to it (``_belongs_to``)."""
    reasons, head, head_reason, previous_end = {}, None, "", None
    for statement in body:
        own = _reason_of(_comment_block(lines, statement.lineno))
        touching = previous_end is not None and statement.lineno == previous_end + 1
        if own or not touching:
            head, head_reason = statement, own
            reasons[id(statement)] = own
        else:
            shared = head is not None and head_reason and _belongs_to(statement, head, head_reason, source)
            reasons[id(statement)] = head_reason if shared else ""
        previous_end = statement.end_lineno
    return reasons


def _function_reads(function: ast.FunctionDef, source: str, lines: list[str]) -> list[Setting]:
    reasons = _inherited_reasons(function.body, lines, source)
    settings, carried = [], ""
    for statement in function.body:
        carried = reasons[id(statement)] or carried
        for call in _env_reads(statement):
            reason = carried or (ast.get_docstring(function) or "").split("\n\n")[0].replace("\n", " ")
            settings.append(Setting(f"in `{function.name}()`", call.args[0].value, _default_of(call, source), reason))
    return settings


def settings_module(path: Path) -> list[Section]:
    """The sections of one settings module, each with its settings in source order."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    sections = [Section("General")]
    reasons = _inherited_reasons(tree.body, lines, source)
    for statement in tree.body:
        block = _comment_block(lines, statement.lineno)
        headings = [i for i, line in enumerate(block) if SECTION.match(line)]
        if headings:
            first = headings[-1]
            title, aside = SECTION.match(block[first]).groups()
            section = Section(title.strip().capitalize() + (f" ({aside})" if aside else ""))
            for line in block[first + 1:]:
                if "://" in line and not section.link:
                    section.link = line.lstrip("# ").strip()
                elif not line.startswith("#:"):
                    section.notes.append(line[1:].strip())
            same = next((s for s in sections if s.title == section.title), None)
            if same is not None:  # the settings above the first heading join it
                same.notes, same.link = same.notes + section.notes, same.link or section.link
                sections.remove(same)
                section = same
            sections.append(section)
        if isinstance(statement, ast.FunctionDef):
            sections[-1].settings.extend(_function_reads(statement, source, lines))
            continue
        if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
            continue
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_")]
        if not names:
            continue
        reason = reasons[id(statement)]
        reads = _env_reads(statement.value)
        for name in names:
            if reads:
                for call in reads:
                    sections[-1].settings.append(
                        Setting(name, call.args[0].value, _default_of(call, source), reason))
            else:
                sections[-1].settings.append(Setting(name, "", _show(statement.value, source), reason))
    return [s for s in sections if s.settings]


def context_settings(path: Path) -> list[Setting]:
    """A context's own settings (``apps/<context>/app_settings.py``): each environment
    variable it reads, its default, and the docstring of the function that returns it."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    settings = []
    for statement in tree.body:
        if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
            continue
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        held = {t.id for t in targets if isinstance(t, ast.Name)}
        # What is computed from it holds it too: _LIMIT = Decimal(_LIMIT_TEXT).
        for later in ast.walk(tree):
            if isinstance(later, ast.Assign) and held & {n.id for n in ast.walk(later.value) if isinstance(n, ast.Name)}:
                held |= {t.id for t in later.targets if isinstance(t, ast.Name)}
        for call in _env_reads(statement.value):
            users = [f for f in functions if held & {n.id for n in ast.walk(f) if isinstance(n, ast.Name)}]
            reason = _reason_of(_comment_block(lines, statement.lineno))
            if not reason and users:
                reason = (ast.get_docstring(users[0]) or "").split("\n\n")[0].replace("\n", " ")
            name = f"`{users[0].name}()`" if users else ", ".join(f"`{n}`" for n in sorted(held))
            settings.append(Setting(name, call.args[0].value, _default_of(call, source), reason))
    return settings


# ------------------------------------------------------------------------- the page


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip() or "—"


def _table(settings: list[Setting], *, first: str = "Setting") -> list[str]:
    rows = [f"| {first} | Environment variable | Default | Why |", "|---|---|---|---|"]
    for s in settings:
        name = s.name if s.name.startswith(("in `", "`")) else f"`{s.name}`"
        variable = f"`{s.variable}`" if s.variable else "fixed"
        rows.append(f"| {name} | {variable} | {_cell(s.default)} | {_cell(s.reason)} |")
    return rows


def settings_modules(root: Path = ROOT) -> list[Path]:
    folder = root / "platform" / "config" / "settings"
    found = {p.stem: p for p in folder.glob("*.py") if not p.name.startswith("_")}
    ordered = [found.pop(name) for name in SETTINGS_ORDER if name in found]
    return ordered + sorted(found.values())


def settings_reference(root: Path = ROOT) -> tuple[str, list[str]]:
    """The generated part of the settings reference, and a problem for each setting
    read from the environment that has no reason in the code."""
    out, problems = [], []
    for path in settings_modules(root):
        module_doc = (ast.get_docstring(ast.parse(path.read_text())) or "").split("\n\n")[0].replace("\n", " ")
        out += [f"## `{path.stem}.py`", "", f"`{path.relative_to(root)}`: {module_doc}", ""]
        for section in settings_module(path):
            out += [f"### {section.title} ({path.stem})", ""]
            if section.notes:
                out += [" ".join(section.notes), ""]
            if section.link:
                out += [f"Documentation: <{section.link}>", ""]
            out += _table(section.settings) + [""]
            # The bus's own settings must say why; Django's and Celery's have their documentation.
            problems += [f"{path.relative_to(root)}: {s.variable} has no reason (a #: comment above it)"
                         for s in section.settings if s.variable.startswith("BUS_") and not s.reason]
    contexts = sorted((root / "apps").glob("*/app_settings.py"))
    if contexts:
        out += ["## The contexts' own settings", "",
                "Each context reads its own (`apps/<context>/app_settings.py`), never the platform's "
                "settings modules: a Django setting of that name if a settings module or a test sets one "
                "(`override_settings`), else the environment variable, else the default. A value that "
                "cannot be read stops the process at start.", ""]
        for path in contexts:
            settings = context_settings(path)
            out += [f"### {path.parent.name}", "", f"`{path.relative_to(root)}`", ""]
            out += _table(settings, first="Read by") + [""]
            problems += [f"{path.relative_to(root)}: {s.variable} has no reason"
                         for s in settings if not s.reason]
    return "\n".join(out), problems


# ------------------------------------------------------------------------ the hooks


def on_page_markdown(markdown, page, config, files):
    if SETTINGS_MARKER in markdown:
        generated, problems = settings_reference()
        for problem in problems:
            log.warning("settings reference: %s", problem)
        markdown = markdown.replace(SETTINGS_MARKER, generated)
    for folder in OUTSIDE_FOLDERS:
        depth = page.file.src_uri.count("/")
        # A link from docs/ to ../bench/results/x points at the copy the site carries.
        markdown = markdown.replace(f"](../{'../' * depth}{folder}/", f"]({'../' * depth}{folder}/")
        markdown = re.sub(rf"\]\(({re.escape('../' * depth + folder)}/(?:[^)]*/)?)\)", r"](\1index.md)", markdown)
    return markdown


def on_files(files, config):
    from mkdocs.structure.files import File

    for folder in OUTSIDE_FOLDERS:
        base = ROOT / folder
        for path in sorted(base.rglob("*")):
            if path.is_file():
                files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"],
                                  config["use_directory_urls"]))
        for directory in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            listing = [f"# `{directory.relative_to(ROOT)}/`", ""]
            listing += [f"- [`{p.name}`]({p.name}{'/index.md' if p.is_dir() else ''})"
                        for p in sorted(directory.iterdir())]
            files.append(File.generated(config, f"{directory.relative_to(ROOT)}/index.md",
                                        content="\n".join(listing) + "\n"))
    return files
