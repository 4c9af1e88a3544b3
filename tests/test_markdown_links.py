"""Every Markdown file a clone holds must be readable from the clone alone: its relative links
reach files that exist, its `#anchors` reach headings, and nothing points outside the repository
(as `../shared/docs/...` once did).

Checked: inline links and images `[text](target)`, reference definitions `[ref]: target`, and any
path starting with `../` inside backticks or fenced code. Skipped: URLs with a scheme (`https:`,
`mailto:` ...) and links inside code. Anchors follow GitHub's heading slugs: lower case, every
character that is not a letter, digit, space, `-` or `_` dropped, spaces turned into `-`, and a
repeated heading suffixed `-1`, `-2` ...
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = frozenset({".git", ".venv", ".tools", "data", "node_modules", "__pycache__"})

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]+(?:\([^\s()]*\)[^\s()]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_UP_PATH = re.compile(r"(?<![\w/.-])((?:\.\./)+[^\s`'\"()<>|,;]*)")


@dataclass(frozen=True)
class Reference:
    line: int
    target: str
    in_code: bool
    """A path found in backticks or a fenced block (checked only for leaving the repository)."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.target}: {self.reason}"


def references(text: str) -> list[Reference]:
    """Links outside code, and `../` paths inside code, with their 1-based line numbers."""
    found: list[Reference] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            else:
                found += [Reference(number, p, True) for p in _UP_PATH.findall(line)]
            continue
        if opening:
            fence = opening.group(1)
            continue
        for span in _CODE_SPAN.finditer(line):
            found += [Reference(number, p, True) for p in _UP_PATH.findall(span.group(2))]
        prose = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        targets = [m.group(1) for m in _INLINE_LINK.finditer(prose)]
        definition = _REFERENCE_DEFINITION.match(prose)
        if definition:
            targets.append(definition.group(1))
        found += [Reference(number, t.strip("<>"), False) for t in targets]
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: any letter or digit (中枢 too) and "_"
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown text defines: its headings' slugs and explicit HTML anchors."""
    seen: dict[str, int] = {}
    result: set[str] = set(_HTML_ANCHOR.findall(text))
    fence: str | None = None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


@cache
def _anchors_of(path: Path) -> frozenset[str]:
    return frozenset(anchors(path.read_text(encoding="utf-8")))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check(path: Path, root: Path) -> list[Problem]:
    """What is wrong with the links of one Markdown file of the repository at `root`."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    problems: list[Problem] = []
    for ref in references(text):
        if _SCHEME.match(ref.target):
            continue  # http(s), mailto: not ours to check offline
        raw_path, _, fragment = ref.target.partition("#")
        if not raw_path:
            if fragment and fragment not in anchors(text):
                problems.append(Problem(name, ref.line, ref.target, "no such heading here"))
            continue
        if raw_path.startswith("/"):
            base, relative = root, unquote(raw_path).lstrip("/")  # GitHub: repository root
        else:
            base, relative = path.parent, unquote(raw_path)
        target = Path(os.path.normpath(base / relative))
        from_root = Path(os.path.normpath(root / relative))
        # A path in code may be written from the repository root rather than from the file: it
        # leaves the repository if it does either way and does not exist from the file.
        leaves = not _inside(target, root) or (
            ref.in_code and not target.exists() and not _inside(from_root, root)
        )
        if leaves:
            problems.append(Problem(name, ref.line, ref.target, "points outside the repository"))
        elif ref.in_code:
            continue
        elif not target.exists():
            problems.append(Problem(name, ref.line, ref.target, "no such file"))
        elif (
            fragment
            and target.suffix == ".md"
            and target.is_file()
            and unquote(fragment) not in _anchors_of(target)
        ):
            problems.append(Problem(name, ref.line, ref.target, "no such heading there"))
    return problems


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown file of the checkout: tracked, or new and not ignored by git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        paths = {root / name for name in listed.split("\0") if name}
    except (OSError, subprocess.SubprocessError):
        paths = set()
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            paths.update(Path(folder) / f for f in files if f.endswith(".md"))
    return sorted(p for p in paths if p.is_file())  # a tracked file deleted in the work tree


def _all_problems(reason_prefix: str) -> list[str]:
    return [
        str(problem)
        for path in markdown_files()
        for problem in check(path, ROOT)
        if problem.reason.startswith(reason_prefix)
    ]


# --- The repository's documents -------------------------------------------------------------------


def test_the_documents_a_newcomer_reads_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/DESIGN.md", "docs/PERFORMANCE.md", "bench/README.md"} <= names


def test_every_relative_link_points_to_an_existing_file() -> None:
    broken = _all_problems("no such file")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_no_markdown_file_links_outside_the_repository() -> None:
    outside = _all_problems("points outside")
    assert not outside, "links out of the repository:\n" + "\n".join(outside)


def test_every_anchor_into_a_markdown_file_matches_a_heading() -> None:
    dangling = _all_problems("no such heading")
    assert not dangling, "anchors without a heading:\n" + "\n".join(dangling)


# --- The checker itself ---------------------------------------------------------------------------

SAMPLE = """\
# Title

See [the design](docs/DESIGN.md#the-bus "design") and ![a picture](img/flow.png).
An [external](https://example.com/x) and a [mail](mailto:a@example.com) link, a [local](#title).
Code `[not a link](nowhere.md)` and `../shared/docs/DESIGN.md` in backticks.

```sh
cat [also not a link](nowhere.md) ../outside.txt
```

[ref]: <other/file.md>
"""


def test_the_link_extractor_reads_targets_and_lines_and_skips_code() -> None:
    assert references(SAMPLE) == [
        Reference(3, "docs/DESIGN.md#the-bus", False),
        Reference(3, "img/flow.png", False),
        Reference(4, "https://example.com/x", False),
        Reference(4, "mailto:a@example.com", False),
        Reference(4, "#title", False),
        Reference(5, "../shared/docs/DESIGN.md", True),
        Reference(8, "../outside.txt", True),
        Reference(11, "other/file.md", False),
    ]


def test_github_slugs_drop_punctuation_and_join_words_with_hyphens() -> None:
    assert github_slug("Durability and delivery guarantees") == "durability-and-delivery-guarantees"
    assert github_slug("P1, `ingress.py`: the webhook") == "p1-ingresspy-the-webhook"
    assert github_slug("1. Feishu / Lark") == "1-feishu--lark"
    assert github_slug("zhongshu (中枢): design") == "zhongshu-中枢-design"
    assert github_slug("snake_case and-hyphen") == "snake_case-and-hyphen"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_the_checker_names_file_and_line_of_each_broken_link(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "DESIGN.md").write_text("# Design\n\n## The bus\n", encoding="utf-8")
    (repo / "bench").mkdir()
    (repo / "bench" / "README.md").write_text(
        "Targets: `../shared/PERFORMANCE.md`; design: `../docs/DESIGN.md`.\n", encoding="utf-8"
    )
    (tmp_path / "shared.md").write_text("# Outside\n", encoding="utf-8")
    readme = repo / "README.md"
    readme.write_text(
        "# Readme\n"
        "[ok](docs/DESIGN.md#the-bus) [ok too](/docs/DESIGN.md) [here](#readme)\n"
        "[gone](docs/MISSING.md)\n"
        "[out](../shared.md) and `../shared.md`\n"
        "[bad anchor](docs/DESIGN.md#the-buss) [bad here](#nowhere)\n"
        "[web](https://example.com/MISSING.md) `[code](docs/MISSING.md)`\n",
        encoding="utf-8",
    )
    assert [str(p) for p in check(readme, repo)] == [
        "README.md:3: docs/MISSING.md: no such file",
        "README.md:4: ../shared.md: points outside the repository",
        "README.md:4: ../shared.md: points outside the repository",
        "README.md:5: docs/DESIGN.md#the-buss: no such heading there",
        "README.md:5: #nowhere: no such heading here",
    ]
    # written from the repository root, as people do in backticks: still outside
    assert [str(p) for p in check(repo / "bench" / "README.md", repo)] == [
        "bench/README.md:1: ../shared/PERFORMANCE.md: points outside the repository",
    ]
