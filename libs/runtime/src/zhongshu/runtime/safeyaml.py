"""YAML from people and programs we do not trust (API bodies, workflow files): PyYAML's safe
loader, less what fuzzing showed it cannot take. Every bad input is a ``yaml.YAMLError``."""

from __future__ import annotations

from typing import Any

import yaml


class UntrustedLoader(yaml.SafeLoader):
    """No aliases: an alias is shared, not copied, until the document is converted, so one that
    refers to itself recursed for ever, and nine aliases of nine aliases expand a short document
    exponentially ("billion laughs"). Definitions have no use for them."""

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


def load_untrusted(text: str) -> Any:
    """The document, or ``yaml.YAMLError`` naming what is wrong (nesting deeper than the parser
    goes included: ``[[[[…``)."""
    try:
        return yaml.load(text, Loader=UntrustedLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deep") from None
