"""Untrusted YAML: every bad document is a yaml.YAMLError, never another exception."""

from __future__ import annotations

import pytest
import yaml

from zhongshu.runtime.safeyaml import load_untrusted


def test_a_plain_document_loads() -> None:
    assert load_untrusted("id: w\nsteps: [1, 2]\n") == {"id": "w", "steps": [1, 2]}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: &a [x]\nb: *a\n", "aliases"),
        ("steps: !!timestamp 1\n", "cannot read"),
        ("id: !!bool x\n", "cannot read"),
        ("[" * 5000, "nested too deep"),
    ],
)
def test_what_pyyaml_cannot_take_is_a_yaml_error(text: str, says: str) -> None:
    with pytest.raises(yaml.YAMLError, match=says):
        load_untrusted(text)
