"""The workflow loader: YAML files and API bodies (JSON, which YAML reads too) through
``load_workflow``, and JSON straight into ``WorkflowDefinition`` then ``validate_workflow`` as the
API does. Inputs are mutated copies of a realistic definition. Property: ``WorkflowInvalid`` (or
``msgspec.DecodeError`` for JSON), or a definition; never any other exception."""

from __future__ import annotations

import msgspec
import yaml
from fuzzlib import Draw, json_input, seed_inputs

from zhongshu.contracts.definitions import WorkflowDefinition
from zhongshu.contracts.validation import WorkflowInvalid, validate_workflow
from zhongshu.taskengine.yamlload import load_workflow

YAML = """
id: daily-report
tenant: acme
description: weather for the ops team
steps:
  - id: fetch
    kind: collect
    config: {url: "https://weather.example.com/today", method: POST, body: {city: Hangzhou}}
    retries: 2
  - id: summary
    kind: infer
    needs: [fetch]
    config: {prompt: "Summarize: {{steps.fetch.json}}"}
    timeout_s: 30
  - id: tell
    kind: notify
    needs: [summary]
    config:
      targets: [{app: acme-feishu, chat: oc_ops}, {url: "https://hooks.example.com/runs"}]
      text: "{{steps.summary.text}}"
"""
ALIASES = (
    "id: &a x\ntenant: acme\nsteps:\n  - &s {id: *a, kind: collect, config: {url: u}}\n  - *s\n"
)
MERGE = "base: &b {kind: collect, config: {url: u}}\nid: x\nsteps:\n  - {<<: *b, id: a}\n"
DOCUMENTS = [yaml.safe_load(YAML)]
SEEDS = [
    *seed_inputs(DOCUMENTS, prefix=b"\x00"),
    b"\x01\x00" + YAML.encode(),
    b"\x01\x00" + ALIASES.encode(),
    b"\x01\x00" + MERGE.encode(),
]


def check(data: bytes) -> None:
    draw = Draw(data)
    as_yaml = draw.byte() % 2
    raw = json_input(draw, DOCUMENTS)
    try:
        if as_yaml:
            load_workflow(raw.decode("utf-8", "replace"), tenant=draw.pick(("acme", None)))
        else:
            text = raw.decode("utf-8", "replace")  # an API body reaches us as text
            validate_workflow(msgspec.json.decode(text, type=WorkflowDefinition))
    except (WorkflowInvalid, msgspec.DecodeError):
        return
