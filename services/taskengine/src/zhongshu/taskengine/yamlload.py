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


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases. An alias is shared, not copied, until the definition
    is converted: one that refers to itself recursed for ever, and nine aliases of nine aliases
    expand a short file exponentially (found by fuzzing). A workflow has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # PyYAML's own constructors fail on explicit tags with values they cannot read
        # (`!!timestamp 1`, `!!bool x`, `!!int` with nothing) with whatever Python raised: a
        # YAML error like any other (found by fuzzing).
        try:
            return super().construct_object(node, deep)
        except (ValueError, IndexError, KeyError, AttributeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag}: {exc!r}", node.start_mark
            ) from None


def load_workflow(
    text: str, *, tenant: str | None = None, source: str = "workflow"
) -> WorkflowDefinition:
    """Parse and validate; :class:`WorkflowInvalid` names what is wrong and where."""
    try:
        raw: Any = yaml.load(text, Loader=_Loader)  # a SafeLoader, less aliases
    except yaml.YAMLError as exc:
        raise WorkflowInvalid(source, [f"not valid YAML: {exc}"]) from None
    except RecursionError:  # `[[[[…`: nested deeper than the parser goes
        raise WorkflowInvalid(source, ["not valid YAML: nested too deep"]) from None
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
