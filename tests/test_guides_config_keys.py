"""The getting-started guides (`docs/guides/*.md`) name only configuration keys that exist: every
key of every fenced ```yaml block, and every inline dotted path such as
`apps.<app>.feishu.bot_open_id`, must be present in `config/zhongshu.example.yaml`; the example
and each guide snippet must pass the real `zhongshu config check`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from zhongshu.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
GUIDES_DIR = ROOT / "docs" / "guides"
EXAMPLE = ROOT / "config" / "zhongshu.example.yaml"
EXPECTED_GUIDES = ("dingtalk.md", "feishu.md")

Path_ = tuple[str, ...]
# Containers whose children are names the user chooses (apps, tenants, chats, MCP servers, card
# action names, an MCP server's environment variables): any child name stands for "*".
WILDCARDS: frozenset[Path_] = frozenset(
    {
        ("apps",),
        ("tenants",),
        ("agent", "tools", "chats"),
        ("agent", "tools", "mcp"),
        ("agent", "tools", "mcp", "*", "env"),
        ("routing", "card_actions"),
    }
)
TOP_LEVEL = ("tenants", "apps", "alerts", "watchdog", "model", "agent", "routing")

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```ya?ml[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
# An inline config path: `apps.<app>.feishu.bot_open_id` (a top-level section, then dotted keys;
# <placeholders> stand for user-chosen names).
_INLINE = re.compile(rf"`((?:{'|'.join(TOP_LEVEL)})(?:\.[A-Za-z0-9_<>*-]+)+)`")
_VARIABLE = re.compile(r"\$\{(?!file:)([^}]+)\}")
_FILE_REFERENCE = re.compile(r"\$\{file:[^}]+\}")

runner = CliRunner()


def yaml_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced ```yaml blocks, dedented (a block may sit in a list item)."""
    return [textwrap.dedent(m.group("body")) for m in _FENCE.finditer(markdown)]


def key_paths(tree: Any, prefix: Path_ = ()) -> set[Path_]:
    """Every key path of a parsed YAML tree; list items share their list's path, and the children
    of a WILDCARDS container are "*"."""
    paths: set[Path_] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = (*prefix, "*" if prefix in WILDCARDS else str(key))
            paths.add(path)
            paths |= key_paths(value, path)
    elif isinstance(tree, list):
        for item in tree:
            paths |= key_paths(item, prefix)
    return paths


def inline_paths(markdown: str) -> set[Path_]:
    """The inline dotted config paths of a guide, normalized like key_paths."""
    found: set[Path_] = set()
    for match in _INLINE.finditer(markdown):
        path: Path_ = ()
        for segment in match.group(1).split("."):
            wild = path in WILDCARDS or (segment.startswith("<") and segment.endswith(">"))
            path = (*path, "*" if wild else segment)
        found.add(path)
    return found


def unknown(paths: set[Path_], allowed: set[Path_]) -> list[str]:
    return sorted(".".join(path) for path in paths - allowed)


def example_paths() -> set[Path_]:
    return key_paths(yaml.safe_load(EXAMPLE.read_text()))


def guides() -> list[Path]:
    return sorted(GUIDES_DIR.glob("*.md"))


def snippets() -> list[tuple[str, str]]:
    return [
        (f"{guide.name}#{index}", block)
        for guide in guides()
        for index, block in enumerate(yaml_blocks(guide.read_text()), 1)
    ]


def config_check(tmp_path: Path, text: str) -> tuple[int, str]:
    """Run `zhongshu config check --file` on ``text`` with every `${VAR}` set to a dummy value
    and every `${file:…}` replaced by a dummy value (the files are the reader's own)."""
    text = _FILE_REFERENCE.sub("dummy-file-content", text)
    env = {name.strip(): "dummy-value" for name in _VARIABLE.findall(text)}
    path = tmp_path / "zhongshu.yaml"
    path.write_text(text)
    result = runner.invoke(
        app, ["config", "check", "--file", str(path)], env={**env, "COLUMNS": "200"}
    )
    return result.exit_code, result.output


# ------------------------------------------------------------------------------------ the guides


def test_the_guides_exist_and_show_yaml_snippets() -> None:
    names = {guide.name for guide in guides()}
    assert set(EXPECTED_GUIDES) <= names
    for name in EXPECTED_GUIDES:
        assert yaml_blocks((GUIDES_DIR / name).read_text()), f"{name} shows no yaml block"


@pytest.mark.parametrize(("where", "block"), snippets(), ids=[w for w, _ in snippets()])
def test_every_key_of_a_guide_snippet_is_in_the_example(where: str, block: str) -> None:
    tree = yaml.safe_load(block)
    assert isinstance(tree, dict), f"{where}: a yaml block must be a zhongshu.yaml mapping"
    assert set(tree) <= set(TOP_LEVEL), f"{where}: rooted at {sorted(tree)}, not at the top level"
    missing = unknown(key_paths(tree), example_paths())
    assert not missing, f"{where}: keys not in config/zhongshu.example.yaml: {missing}"


@pytest.mark.parametrize("guide", guides(), ids=lambda guide: guide.name)
def test_every_inline_config_path_of_a_guide_is_in_the_example(guide: Path) -> None:
    missing = unknown(inline_paths(guide.read_text()), example_paths())
    assert not missing, f"{guide.name}: inline config paths not in the example: {missing}"


@pytest.mark.parametrize(("where", "block"), snippets(), ids=[w for w, _ in snippets()])
def test_every_guide_snippet_passes_config_check(where: str, block: str, tmp_path: Path) -> None:
    code, output = config_check(tmp_path, block)
    assert code == 0, f"{where}:\n{output}"
    assert "is valid" in output


def test_the_example_passes_config_check(tmp_path: Path) -> None:
    code, output = config_check(tmp_path, EXAMPLE.read_text())
    assert code == 0, output
    assert "2 app(s): acme-feishu (feishu, tenant acme), acme-dingtalk (dingtalk" in output


# ------------------------------------------------------------------------------- the checker


def test_the_key_checker_catches_an_unknown_key() -> None:
    snippet = textwrap.dedent(
        """
        apps:
          any-name-we-like:
            tenant: t
            platform: feishu
            feishu: {app_id: cli_x, app_secret: s, bot_openid: ou_x}
        agent:
          tools:
            chats: {my-chat: {app: any-name-we-like, chat: oc_x}}
        surprise: {}
        """
    )
    missing = unknown(key_paths(yaml.safe_load(snippet)), example_paths())
    # A misspelt key and an unknown section are caught; user-chosen names are not.
    assert missing == ["apps.*.feishu.bot_openid", "surprise"]


def test_the_inline_checker_catches_an_unknown_path() -> None:
    text = (
        "Set `apps.<app>.feishu.bot_open_id` and `apps.acme.dingtalk.card_template`, "
        "not `receive: [stream]` or `FEISHU_BASE_URL`."
    )
    assert inline_paths(text) == {
        ("apps", "*", "feishu", "bot_open_id"),
        ("apps", "*", "dingtalk", "card_template"),
    }
    assert unknown(inline_paths(text), example_paths()) == ["apps.*.dingtalk.card_template"]


def test_yaml_blocks_are_found_in_list_items_and_other_languages_are_not() -> None:
    text = (
        "1. step\n\n   ```yaml\n   tenants:\n     a: {}\n   ```\n\n"
        "```text\nnot: yaml\n```\n\n```yaml\nmodel: {qps: 1}\n```\n"
    )
    assert [yaml.safe_load(b) for b in yaml_blocks(text)] == [
        {"tenants": {"a": {}}},
        {"model": {"qps": 1}},
    ]


def test_config_check_refuses_a_snippet_with_a_key_the_schema_lacks(tmp_path: Path) -> None:
    code, output = config_check(tmp_path, "tenants: {a: {name: A, colour: red}}\n")
    assert code == 1
    assert "tenants.a.colour" in output
