"""The README and docs/ say what works: every `edge-llm` command line they show parses, every
relative link they make resolves, and the README stays a front door (at most 300 lines, one
commands-table row per command).

Judges: the CLI's own parser (the typer app, plugins included, turned into its click command and
made to parse each documented line with `make_context`, as `edge-llm` itself would before running
it; nothing is run), and the file system (a link's target exists; an anchor names a heading of the
target as GitHub slugs it).
"""

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from edge_llm.cli import _click_exceptions, cli_app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"sh", "bash", "shell", "console"}

# Lines skipped on purpose, each for a reason the parser cannot see past:
SKIP = {
    "a placeholder in angle brackets (`<this repository>`)": re.compile(r"<[^>]*>"),
    "a shell variable or command substitution ($VAR, $(...)) whose value the doc leaves open": (
        re.compile(r"\$")
    ),
    "an elided argument list (`...`)": re.compile(r"\.\.\.(?!\w)"),
}
# Words before the command that only wrap it: `nice -n 19 edge-llm ...`, `time edge-llm ...`.
WRAPPERS = {"nice": 2, "time": 0, "/usr/bin/time": 0, "exec": 0}
# In a block without a language, only lines that start with the command (after a `$ ` prompt,
# environment assignments or a wrapper) are commands; the rest is output.
COMMAND_LINE = re.compile(r"^\s*([A-Za-z_]\w*=\S* )*(nice -n \d+ |time )?edge-llm( |$)")


def fences(text: str):
    """(language, first line number, lines) of each fenced code block of a markdown text."""
    lang, start, body = None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*```(\S*)", line)
        if m and lang is None:
            lang, start, body = m.group(1) or "", n + 1, []
        elif m:
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def logical_lines(start: int, lines: list[str]):
    """(line number, text) with backslash continuations joined and a leading `$ ` prompt dropped."""
    n, buf = start, ""
    for i, line in enumerate(lines):
        if not buf:
            n = start + i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield n, re.sub(r"^\s*\$ ", "", buf + line)
        buf = ""


def edge_llm_invocations(line: str) -> list[list[str]]:
    """The argument lists of the `edge-llm` commands a shell line runs (after env assignments and
    wrappers such as `nice`, in each part of a pipeline or `&&` list; `-m edge_llm` too)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found, part = [], []
    for w in [*words, ";"]:
        if w not in ("|", "||", "&&", ";", "&"):
            part.append(w)
            continue
        while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
            part = part[1:]
        while part and part[0] in WRAPPERS:
            part = part[1 + WRAPPERS[part[0]] :]
        if part and part[0] == "edge-llm":
            found.append(part[1:])
        elif "-m" in part and part.index("-m") + 1 < len(part):
            i = part.index("-m")
            if part[i + 1] == "edge_llm":
                found.append(part[i + 2 :])
        part = []
    return found


def documented_commands():
    """(doc, line number, line, args) of every `edge-llm` command in the docs' code blocks: shell
    blocks, and the command lines of blocks without a language."""
    for doc in DOCS:
        for lang, start, body in fences(doc.read_text()):
            if lang and lang not in SHELL_FENCES:
                continue
            for n, line in logical_lines(start, body):
                if "edge-llm" not in line and "edge_llm" not in line:
                    continue
                if not lang and not COMMAND_LINE.match(line):  # an unlabelled block: output too
                    continue
                for args in edge_llm_invocations(line):
                    yield doc.relative_to(ROOT), n, line.strip(), args


def skip_reason(args: list[str]) -> str | None:
    return next((why for why, p in SKIP.items() if any(p.search(a) for a in args)), None)


def parse(command, name: str, args: list[str], parent=None) -> list[str]:
    """Parse ``args`` as `edge-llm` would, down to the leaf command; the command path."""
    ctx = command.make_context(name, list(args), parent=parent, resilient_parsing=False)
    if not hasattr(command, "resolve_command"):
        return [name]
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    rest = [*protected, *ctx.args]
    if not rest:
        ctx.fail("missing command")
    sub_name, sub, sub_args = command.resolve_command(ctx, rest)
    return [name, *parse(sub, sub_name, sub_args, ctx)]


@pytest.fixture(scope="module")
def root_command():
    return typer.main.get_command(cli_app())


COMMANDS = list(documented_commands())


def test_the_docs_show_commands_at_all():
    # the scan finds what it should: the README's tour and the pages' examples
    docs = {str(d) for d, *_ in COMMANDS}
    assert "README.md" in docs and len(docs) >= 8, docs
    assert len(COMMANDS) >= 60


@pytest.mark.parametrize("doc,n,line,args", COMMANDS, ids=[f"{d}:{n}" for d, n, *_ in COMMANDS])
def test_every_documented_command_parses(root_command, doc, n, line, args):
    why = skip_reason(args)
    if why:
        pytest.skip(f"{doc}:{n}: {why}")
    usage_error, _ = _click_exceptions()
    try:
        path = parse(root_command, "edge-llm", args)
    except usage_error as e:
        pytest.fail(f"{doc}:{n}: `{line}` does not parse: {e.format_message()}")
    except Exception as e:  # --help / --version end the parse early with exit code 0
        if getattr(e, "exit_code", None) != 0:
            raise
        return
    assert len(path) >= 2, (doc, n, line)


def test_a_wrong_command_or_option_would_be_caught(root_command):
    usage_error, _ = _click_exceptions()
    for args in (["serv"], ["run", "--no-such-option"], ["bench", "report", "--nope"]):
        with pytest.raises(usage_error):
            parse(root_command, "edge-llm", args)
    assert parse(root_command, "edge-llm", ["bench", "m.gguf", "--suite", "quick"]) == [
        "edge-llm",
        "bench",
        "run",
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def code_lines(text: str) -> set[int]:
    """The line numbers of a markdown text's fenced code blocks, fences included."""
    return {n for _, s, body in fences(text) for n in range(s - 1, s + len(body) + 1)}


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    in_code = code_lines(text)
    seen: dict[str, int] = {}
    out = set()
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^#{1,6} (.+)$", line)
        if m and n not in in_code:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def links(path: Path):
    """(line number, target) of every relative link or image outside code blocks."""
    text = path.read_text()
    in_code = code_lines(text)
    for n, line in enumerate(text.splitlines(), 1):
        if n in in_code:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                yield n, target


def test_every_relative_link_resolves():
    broken = []
    for doc in DOCS:
        for n, target in links(doc):
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}:{n}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in DOCS[1:]}
    assert pages <= readme, pages - readme


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, len(lines)


def test_the_commands_table_has_one_row_per_command(root_command):
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `edge-llm ([a-z][a-z-]*)", text, re.M)
    listed = {n for n, c in root_command.commands.items() if not c.hidden}
    assert sorted(rows) == sorted(listed), (sorted(rows), sorted(listed))
