"""Workflows in YAML: the same shape as the API's JSON (`WorkflowDefinition`), so a file, a
`POST /api/v1/workflows` body and a Python `dsl.workflow(...)` all mean the same thing::

    id: daily-report
    tenant: acme            # optional when the caller names the tenant
    steps:
      - {id: fetch, kind: collect, config: {url: "https://status.example.com/api"}}
      - {id: summary, kind: infer, needs: [fetch],
         config: {prompt: "Summarize {{steps.fetch.text}}"}}
      - {id: tell, kind: notify, needs: [summary],
         config: {targets: [{app: acme-feishu, chat: oc_ops}], text: "{{steps.summary.text}}"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from zhongshu.contracts.definitions import WorkflowDefinition
from zhongshu.contracts.validation import WorkflowInvalid, validate_workflow
from zhongshu.runtime.safeyaml import load_untrusted


def load_workflow(
    text: str, *, tenant: str | None = None, source: str = "workflow"
) -> WorkflowDefinition:
    """Parse and validate; :class:`WorkflowInvalid` names what is wrong and where."""
    try:
        raw: Any = load_untrusted(text)
    except yaml.YAMLError as exc:
        raise WorkflowInvalid(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise WorkflowInvalid(source, ["expected a mapping with `id` and `steps`"])
    if tenant is not None and raw.setdefault("tenant", tenant) != tenant:
        raise WorkflowInvalid(
            str(raw.get("id", source)), [f"tenant is {raw['tenant']!r}, expected {tenant!r}"]
        )
    try:
        definition = msgspec.convert(raw, WorkflowDefinition)
    except msgspec.ValidationError as exc:
        raise WorkflowInvalid(str(raw.get("id", source)), [str(exc)]) from None
    except RecursionError:  # parsed, but deeper than the conversion goes
        raise WorkflowInvalid(source, ["nested too deep"]) from None
    return validate_workflow(definition)


def load_workflow_file(path: Path, *, tenant: str | None = None) -> WorkflowDefinition:
    return load_workflow(path.read_text(), tenant=tenant, source=str(path))
