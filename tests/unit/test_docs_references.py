"""Every file a comment, a docstring or a document names exists in the repository.

A reader follows a comment's pointer ("docs/operations.md, Storage budgets",
``idp.services.outbox``, ``functional/test_methods.py::test_...``) to the place that explains the
decision; a pointer to a file that was moved, split or never committed is a dead end. The
repository explains itself (docs/architecture.md): comments cite the spec clause or its own
docs, never a document outside it (no design or style notes kept elsewhere) and never an issue
number, which a reader of the repository cannot look up.

What is read: the comments and docstrings of idp/, tests/, bench/ and scripts/ (Python, shell,
JavaScript, CSS, templates), the comments of the build files, and every Markdown file of docs/
plus the READMEs. What counts as a reference:

- a repository path: ``idp/...``, ``tests/...``, ``bench/...``, ``scripts/...``, ``docs/...``,
  ``config/...`` (placeholders such as ``docs/<name>`` or ``tests/functional/...`` are skipped);
  with ``::`` (``idp/services/grants.py::GrantService.redeem_code``), the names in that file;
- in Markdown, a relative link target, and a test path relative to ``tests/`` as
  docs/security.md writes them (``functional/test_x.py::test_y``, ``::test_z`` naming another test
  of the same file): the file, and each named test function in it;
- a dotted module name (``idp.services.outbox``, ``idp.services.outbox.deliver``): the module, and
  the name defined at its top level.

A line of a document marked ``<!-- check after merge -->`` names what a change under way creates
or moves; its references are checked once the mark is removed.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Directories whose comments and docstrings are read, and the Markdown besides docs/.
SOURCE_DIRS = ("idp", "tests", "bench", "scripts")
BUILD_FILES = ("pyproject.toml", "Makefile", "Dockerfile", "config")
MARKDOWN = ("docs", "README.md", "bench/README.md")
SKIPPED_PARTS = frozenset(
    {".venv", "node_modules", "__pycache__", ".git", "instance", "test-artifacts", "results"}
)
SKIPPED_SUFFIXES = frozenset({".json", ".png", ".svg", ".lock", ".pyc", ".mako"})

#: A repository path: starts at a top-level directory, not inside a URL or another path.
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:idp|tests|bench|scripts|docs|config)/[\w./<>*{}-]*)((?:::[\w.]+)?)"
)
#: A test path relative to tests/ (docs/security.md), with the tests it names.
TEST_PATH = re.compile(
    r"(?<![\w./-])(?:tests/)?((?:unit|functional|browser|interop|multinode|container|floors|support)"
    r"/[\w/-]+\.py)((?:::\w+)?)"
)
SAME_FILE_TEST = re.compile(r"(?<![\w.])::(test_\w+)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w.])(idp(?:\.\w+)+)")

#: Citations a reader of the repository cannot follow.
OUTSIDE_DOCUMENT = re.compile(r"(?i)\b(?:DESIGN|STYLE)\.md\b|\bthe design\b(?! of)")
ISSUE_NUMBER = re.compile(
    r"(?i:\b(?:issues?|pull requests?)\s*#?\d+)|\bPR ?#?\d+\b|(?<![\w&/#])#\d+\b"
)


@dataclass(frozen=True)
class Text:
    """A comment, a docstring or a Markdown file: where it is, and what it says."""

    path: Path
    line: int
    text: str
    markdown: bool = False

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _files(*names: str) -> Iterator[Path]:
    for name in names:
        top = ROOT / name
        if top.is_file():
            yield top
            continue
        for directory, subdirectories, files in os.walk(top):
            subdirectories[:] = sorted(
                d
                for d in subdirectories
                if d not in SKIPPED_PARTS and not d.startswith(".") and not d.endswith(".egg-info")
            )
            for file_name in sorted(files):
                path = Path(directory, file_name)
                if path.suffix not in SKIPPED_SUFFIXES and not file_name.startswith("."):
                    yield path


def _python(path: Path, source: str) -> Iterator[Text]:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield Text(path, token.start[0], token.string)
    # Docstrings only: statements are walked, expressions are not (a fraction of the nodes).
    pending: list[ast.AST] = [ast.parse(source)]
    while pending:
        node = pending.pop()
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield Text(path, first.lineno, first.value.value)
        for child in body:
            if isinstance(child, ast.stmt):
                pending.append(child)
                pending.extend(getattr(child, "orelse", []))
                pending.extend(getattr(child, "finalbody", []))
                pending.extend(getattr(child, "handlers", []))


HASH_COMMENT = re.compile(r"(?:^|\s)(#.*)$", re.MULTILINE)
SLASH_COMMENT = re.compile(r"(?<![:\w\"'])//.*$|/\*.*?\*/", re.MULTILINE | re.DOTALL)
TEMPLATE_COMMENT = re.compile(r"\{#.*?#\}|<!--.*?-->", re.DOTALL)


def _by_pattern(path: Path, source: str, pattern: re.Pattern[str]) -> Iterator[Text]:
    for match in pattern.finditer(source):
        yield Text(path, source.count("\n", 0, match.start()) + 1, match.group(0))


@cache
def texts() -> tuple[Text, ...]:
    """Every comment and docstring of the sources, and every Markdown file whole (read once for
    every test of this module)."""
    return tuple(_texts())


def _texts() -> Iterator[Text]:
    for path in _files(*SOURCE_DIRS, *BUILD_FILES):
        if path.suffix == ".md":
            continue  # read whole below
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if path.suffix == ".py":
            yield from _python(path, source)
        elif path.suffix in {".js", ".mjs", ".css"}:
            yield from _by_pattern(path, source, SLASH_COMMENT)
        elif path.suffix in {".html", ".txt"}:
            yield from _by_pattern(path, source, TEMPLATE_COMMENT)
        else:  # shell, TOML, Makefile, Dockerfile, INI
            yield from _by_pattern(path, source, HASH_COMMENT)
    for path in _files(*MARKDOWN):
        if path.suffix == ".md":
            yield Text(path, 1, path.read_text(encoding="utf-8"), markdown=True)


def _line_of(text: Text, offset: int) -> str:
    return f"{text.path.relative_to(ROOT)}:{text.line + text.text.count(chr(10), 0, offset)}"


def _placeholder(path: str) -> bool:
    return any(mark in path for mark in ("...", "<", "*", "{"))


def _repo_paths(text: Text) -> Iterator[tuple[str, str]]:
    """(where, path) of every repository path ``text`` names that does not exist, and of every
    ``path.py::Name.name`` whose names the file does not define."""
    for match in REPO_PATH.finditer(text.text):
        if _pending(text, match.start()):
            continue
        path = match.group(1).rstrip(".,;:'\"`)")
        if _placeholder(path):
            continue
        where = _line_of(text, match.start())
        if not (ROOT / path).exists():
            yield where, path
        elif match.group(2) and path.endswith(".py"):
            names = match.group(2)[2:].rstrip(".").split(".")
            if not set(names) <= _defined_names(ROOT / path):
                yield where, path + match.group(2).rstrip(".")


#: Marks an item of a document (a paragraph, a list item, a table row) that names what a change
#: under way will create or move: its references are checked once the mark is removed.
PENDING = "<!-- check after merge -->"
#: A line that starts an item of its own: blank, a list item, a table row, a heading, a fence.
ITEM_START = re.compile(r"\s*(?:[-*] |\d+\. |\||#|```|<!--)|\s*$")


def _pending(text: Text, offset: int) -> bool:
    """Is the item around ``offset`` of a Markdown file marked ``PENDING``?"""
    if not text.markdown:
        return False
    lines = text.text.split("\n")
    first = last = text.text.count("\n", 0, offset)
    while first > 0 and not ITEM_START.match(lines[first]) and lines[first - 1].strip():
        first -= 1
    while last + 1 < len(lines) and not ITEM_START.match(lines[last + 1]):
        last += 1
    return any(PENDING in line for line in lines[first : last + 1])


def _markdown_references(text: Text) -> Iterator[tuple[str, str]]:
    """Relative link targets, and test paths relative to tests/ with the tests they name."""
    for match in MARKDOWN_LINK.finditer(text.text):
        if _pending(text, match.start()):
            continue
        target = match.group(1).split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or _placeholder(target):
            continue
        if not (text.path.parent / target).exists():
            yield _line_of(text, match.start()), target
    offset = 0
    for line_number, line in enumerate(text.text.split("\n"), start=text.line):
        offset, line_offset = offset + len(line) + 1, offset
        if _pending(text, line_offset):
            continue
        where = f"{text.path.relative_to(ROOT)}:{line_number}"
        current: Path | None = None
        position = 0
        while True:
            found = TEST_PATH.search(line, position)
            same = SAME_FILE_TEST.search(line, position)
            if found is not None and (same is None or found.start() <= same.start()):
                relative = found.group(1)
                current = ROOT / "tests" / relative
                if not current.exists():
                    yield where, f"tests/{relative}"
                    current = None
                elif found.group(2) and found.group(2)[2:] not in _defined_names(current):
                    yield where, f"tests/{relative}{found.group(2)}"
                position = found.start() + len(relative)
            elif same is not None:
                if current is not None and same.group(1) not in _defined_names(current):
                    yield where, f"{current.relative_to(ROOT)}::{same.group(1)}"
                position = same.end()
            else:
                break


@cache
def _defined_names(path: Path) -> frozenset[str]:
    """The names a module defines or imports: functions, classes, methods, assigned names."""
    names: set[str] = set()
    if path.is_dir():
        return frozenset()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


#: Dotted names that are host or file names (``idp.example``, ``idp.env``, the embedded database
#: ``idp.db``) or the request log's logger (``idp.request``, idp.observability), not modules.
NOT_MODULES = frozenset({"com", "db", "env", "example", "invalid", "local", "md", "org", "py",
                         "request", "test", "toml"})  # fmt: skip


def _module_file(parts: list[str]) -> Path | None:
    """The file of module ``parts``; a package directory without ``__init__.py`` (a namespace
    package) is its own directory, which defines no names."""
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return base if base.is_dir() else None


def _dotted_names(text: Text) -> Iterator[tuple[str, str]]:
    """A dotted name: its longest prefix that is a module, then the next part defined there."""
    for match in DOTTED.finditer(text.text):
        if _pending(text, match.start()):
            continue
        parts = match.group(1).split(".")
        if NOT_MODULES.intersection(parts) or any(len(part) == 1 for part in parts):
            continue  # a host or file name, or a placeholder such as idp.a.b
        known = 1
        while known < len(parts) and _module_file(parts[: known + 1]) is not None:
            known += 1
        module = _module_file(parts[:known])
        if known < len(parts) and (module is None or parts[known] not in _defined_names(module)):
            yield _line_of(text, match.start()), match.group(1)


def test_every_file_a_comment_or_document_names_exists() -> None:
    missing = {
        f"{where}: {path}"
        for text in texts()
        for where, path in (
            *_repo_paths(text),
            *(_markdown_references(text) if text.markdown else ()),
        )
    }
    assert not missing, "named but not in the repository:\n" + "\n".join(sorted(missing))


def test_every_module_a_comment_or_document_names_exists() -> None:
    missing = sorted(f"{where}: {name}" for text in texts() for where, name in _dotted_names(text))
    assert not missing, "no such module or name in idp/:\n" + "\n".join(missing)


#: A section of a document cited after its path, as comments and documents cite them:
#: docs/operations.md, "Storage budgets"; further names of the same document may follow
#: (docs/performance.md, "Server choice: granian" and "A quiet machine").
SECTION_CITATION = re.compile(
    r'(?<![\w./-])((?:docs/[\w-]+|bench/README|README)\.md)[,:]?\s+"([^"]+)"'
    r'((?:\s*(?:,|and|, and)\s+"[^"]+")*)'
)
#: Where a comment goes on to its next line: the comment mark that starts it.
COMMENT_CONTINUES = re.compile(r"\n[ \t]*(?:#:?|//|\*)[ \t]?")


def _passages(items: Iterable[Text]) -> Iterator[Text]:
    """``items`` with a comment and the comment lines right after it as one text, so that a
    citation broken across two lines of a comment is read whole."""
    run: list[Text] = []
    for text in (*items, None):
        if (
            text is not None
            and run
            and text.path == run[-1].path
            and text.line == run[-1].line + 1
            and "\n" not in text.text
            and "\n" not in run[-1].text
        ):
            run.append(text)
            continue
        if run:
            yield Text(run[0].path, run[0].line, "\n".join(t.text for t in run), run[0].markdown)
        run = [text] if text is not None else []


@cache
def _markdown() -> dict[Path, str]:
    """Every Markdown file ``texts()`` read, by path: the documents a citation can name."""
    return {text.path: text.text for text in texts() if text.markdown}


@cache
def _words_of(document: Path) -> str:
    """The document's words, lower case, without its own citations of other documents' sections
    (a section moved away leaves its name there, in the citation that points to its new place)."""
    text = _markdown()[document]
    own = f"{document.relative_to(ROOT)}"
    text = SECTION_CITATION.sub(lambda m: m.group(0) if m.group(1) == own else " ", text)
    return " ".join(text.split()).lower()


def _sections_missing(text: Text) -> Iterator[tuple[str, str]]:
    """(where, 'document "name"') of every section a citation names that its document does not
    hold (``_holds_section``)."""
    prose = COMMENT_CONTINUES.sub("\n", text.text)
    for match in SECTION_CITATION.finditer(prose):
        if _pending(text, match.start()):
            continue
        document = ROOT / match.group(1)
        if document not in _markdown():
            continue  # a file that does not exist is reported by the test of the files named
        names = [match.group(2), *re.findall(r'"([^"]+)"', match.group(3))]
        for name in names:
            words = " ".join(name.split())
            if not _holds_section(document, words.lower()):
                yield _line_of(text, match.start()), f'{match.group(1)} "{words}"'


#: A heading (``## 6. Back-channel logout``) or a rule's bold lead words (``- **Every secret is
#: spent once, through one primitive.**``): where a section can be named.
SECTION_NAME = re.compile(r"^#+\s+(?:\d+\.\s+)?(.+)$|\*\*([^*]+)\*\*", re.MULTILINE)


@cache
def _section_names(document: Path) -> tuple[str, ...]:
    text = _markdown()[document]
    return tuple(
        " ".join((heading or bold).split()).lower() for heading, bold in SECTION_NAME.findall(text)
    )


@cache
def _headings_elsewhere() -> dict[str, frozenset[Path]]:
    """Every heading of the Markdown files read, and the files that have it."""
    found: dict[str, set[Path]] = {}
    for path, text in _markdown().items():
        for heading, _bold in SECTION_NAME.findall(text):
            if heading:
                found.setdefault(" ".join(heading.split()).lower(), set()).add(path)
    return {heading: frozenset(paths) for heading, paths in found.items()}


def _holds_section(document: Path, name: str) -> bool:
    """Is ``name`` (lower case) a section of ``document``: the start of a heading or of a rule's
    bold lead words, or else words of its prose, unless those words head a section of another
    document only (the section was moved there, and its name stayed in this one's prose)."""
    if any(section.startswith(name) for section in _section_names(document)):
        return True
    if document not in _headings_elsewhere().get(name, frozenset({document})):
        return False
    return name in _words_of(document)


def test_every_section_a_comment_or_document_cites_is_in_its_document() -> None:
    """A section cited by its document's path and its name in quotes is in that document: a
    section moved to another document, or renamed, leaves its citations pointing nowhere."""
    missing = sorted(
        {
            f"{where}: {name}"
            for text in _passages(texts())
            for where, name in _sections_missing(text)
        }
    )
    assert not missing, "no such section in the document cited:\n" + "\n".join(missing)


def test_no_comment_or_document_cites_an_outside_document_or_an_issue_number() -> None:
    found = sorted(
        f"{_line_of(text, match.start())}: {match.group(0)!r}"
        for text in texts()
        for pattern in (OUTSIDE_DOCUMENT, ISSUE_NUMBER)
        for match in pattern.finditer(text.text)
    )
    assert not found, (
        "cite the spec clause or the repository's own docs (docs/architecture.md) instead:\n"
        + "\n".join(found)
    )


def _named(line: str, markdown: bool) -> list[str]:
    """What the checks above report for ``line``, as if it were written in docs/."""
    text = Text(ROOT / "docs" / "example.md", 1, line, markdown=markdown)
    found = [*_repo_paths(text), *_dotted_names(text)]
    if markdown:
        found.extend(_markdown_references(text))
    return sorted({name for _where, name in found})


@pytest.mark.parametrize(
    ("line", "markdown", "named"),
    [
        ("see docs/operations.md, Storage budgets.", False, []),
        ("see docs/nowhere.md (or idp/services/nowhere.py).", False,
         ["docs/nowhere.md", "idp/services/nowhere.py"]),
        ("https://example.org/docs/nowhere.md, ~/.cache/idp/x, docs/<name>, tests/functional/...",
         False, []),
        ("idp.services.outbox and idp.services.outbox.deliver, idp.example.com, idp.a.b", False,
         []),
        ("idp.services.nowhere, idp.services.outbox.nothing_here", False,
         ["idp.services.nowhere", "idp.services.outbox.nothing_here"]),
        ("`functional/test_methods.py::test_nothing_here`, "
         "`::test_head_to_every_route_is_never_a_server_error`, `unit/test_nowhere.py`", True,
         ["tests/functional/test_methods.py::test_nothing_here", "tests/unit/test_nowhere.py"]),
        ("[probes](operations.md#probes), [gone](gone.md), [spec](https://example.org/x.md)", True,
         ["gone.md"]),
        ("idp/services/grants.py::GrantService.redeem_code, idp/oidc/checks.py::check_pkce.", False,
         []),
        ("idp/services/grants.py::GrantService.nothing_here", False,
         ["idp/services/grants.py::GrantService.nothing_here"]),
        ("idp/nowhere.py and idp.nowhere, not yet merged <!-- check after merge -->", True, []),
        ("A paragraph naming idp/nowhere.py\non two lines <!-- check after merge -->\n\n"
         "and idp/gone.py after it", True, ["idp/gone.py"]),
        ("- idp/nowhere.py <!-- check after merge -->\n- idp/gone.py", True, ["idp/gone.py"]),
    ],
)  # fmt: skip
def test_references_are_read_from_prose(line: str, markdown: bool, named: list[str]) -> None:
    assert _named(line, markdown) == sorted(named)


@pytest.mark.parametrize(
    ("lines", "missing"),
    [
        (['(docs/operations.md, "Storage budgets")'], []),
        (['(docs/operations.md, "Storage plans")'], ['docs/operations.md "Storage plans"']),
        (['docs/performance.md, "Server choice: granian" and "The zeroth round"'],
         ['docs/performance.md "The zeroth round"']),
        (['# as docs/operations.md, "Storage', '# budgets" says'], []),
        (['# as docs/operations.md, "Storage', '# plans" says'],
         ['docs/operations.md "Storage plans"']),
        (['bench/README.md, "The JSON summary"; README.md "No such part"'],
         ['README.md "No such part"']),
        # A sentence of the document's prose, cited by its words:
        (['docs/admins.md, "Actions from the command line are audited as coming"'], []),
        # docs/security.md names this section only where it cites another document's:
        (['docs/security.md, "Groups, per-app access and claim maps"'],
         ['docs/security.md "Groups, per-app access and claim maps"']),
    ],
)  # fmt: skip
def test_section_citations_are_read_across_comment_lines(
    lines: list[str], missing: list[str]
) -> None:
    path = ROOT / "idp" / "example.py"
    comments = [Text(path, number, line) for number, line in enumerate(lines, start=1)]
    found = [name for text in _passages(comments) for _where, name in _sections_missing(text)]
    assert sorted(found) == missing


def test_issue_numbers_and_outside_documents_are_recognised() -> None:
    assert ISSUE_NUMBER.search("# Issue 18 item 9: the owner hears of it")
    assert ISSUE_NUMBER.search("fixed in #42")
    assert not ISSUE_NUMBER.search("&#34;quoted&#34; and RFC 6749 4.1.2")
    assert OUTSIDE_DOCUMENT.search("(DESIGN.md, Invariants)")
    assert OUTSIDE_DOCUMENT.search("the design step-up")
    assert not OUTSIDE_DOCUMENT.search("guessable by design; the design of WebAuthn")


# -- the README's layout ---------------------------------------------------------------------------
#: Entries that are not part of the source tree (local state, build output): the directories
#: .gitignore names, which come and go as tests run (the container test makes build/), and the
#: package metadata pip writes.
NOT_IN_LAYOUT = frozenset(
    {"idp.egg-info"}
    | {
        line.strip().strip("/")
        for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip().endswith("/") and "*" not in line
    }
)


def _layout_paths() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    named = {match.group(1).rstrip(".,;:`") for match in REPO_PATH.finditer(section)}
    return named | set(re.findall(r"`([\w./-]+)`", section))


def _tree() -> set[str]:
    """What the layout must name: every module and package of idp/, every directory of tests/,
    and the other top-level directories."""
    expected = set()
    for top in ("idp", "tests"):
        for entry in (ROOT / top).iterdir():
            if entry.name in NOT_IN_LAYOUT or entry.name.startswith("."):
                continue
            if entry.is_dir():
                expected.add(f"{top}/{entry.name}/")
            elif top == "idp" and entry.suffix == ".py":
                expected.add(f"{top}/{entry.name}")
    for entry in ROOT.iterdir():
        skipped = entry.name in {"idp", "tests", *NOT_IN_LAYOUT} or entry.name.startswith(".")
        if entry.is_dir() and not skipped:
            expected.add(f"{entry.name}/")
    return expected


def test_the_readme_layout_names_every_part_of_the_tree() -> None:
    """README.md's layout lists every module and package of idp/, every kind of test and every
    other top-level directory (a path that no longer exists fails the test above)."""
    missing = sorted(_tree() - _layout_paths())
    assert not missing, "README.md, Layout, does not name: " + ", ".join(missing)
