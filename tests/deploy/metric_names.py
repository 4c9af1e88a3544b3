"""What the services export, read from the code: every metric registered once each installed
service (``zhongshu.services`` entry points) and the side port's collectors are loaded, with the
series names Prometheus sees and each metric's label names. The deploy files' tests check their
PromQL against it, so a renamed metric breaks CI, not a dashboard."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import promql_parser
from prometheus_client import REGISTRY

# Series suffixes the text format adds to a family's name, by type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Labels Prometheus adds to every series at scrape time (deploy/observability/prometheus.yml),
# and its own series.
TARGET_LABELS = frozenset({"job", "instance", "service", "namespace", "pod", "hub"})
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMETHEUS_LABELS = frozenset({"__name__", "le", "alertname", "alertstate", "level", "severity"})


@dataclass(frozen=True)
class Exported:
    labels: dict[str, frozenset[str]]  # series name -> its label names (when declared)

    def __contains__(self, name: object) -> bool:
        return name in self.labels


@functools.cache
def exported() -> Exported:
    from zhongshu.cli import services
    from zhongshu.runtime import procmetrics

    for name in services.names():
        services.load(name)
    procmetrics.register()
    labels: dict[str, frozenset[str]] = {}
    names_of = REGISTRY._collector_to_names  # the declared label names live on the collectors
    for collector in list(names_of):
        declared = frozenset(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            suffixes = SUFFIXES.get(family.type, ("",))
            for suffix in suffixes:
                labels[family.name + suffix] = declared
            for sample in family.samples:
                labels[sample.name] = labels.get(sample.name, frozenset()) | set(sample.labels)
    return Exported(labels)


@dataclass(frozen=True)
class Selector:
    name: str | None
    labels: tuple[str, ...]
    matchers: tuple[tuple[str, str, str], ...] = ()  # (label, op, value): op "=", "!=", "=~", "!~"

    def values(self, label: str) -> set[str]:
        """The values ``label``'s matchers name: (in)equalities, and alternations (``a|b|c``)."""
        found: set[str] = set()
        for name, op, value in self.matchers:
            if name == label and op in ("=", "!=", "=~"):
                found |= set(value.split("|")) if op == "=~" else {value}
        return found


def selectors(expr: str) -> Iterator[Selector]:
    """Every instant or range vector selector in ``expr`` (parsed: raises on bad PromQL)."""
    found: list[Selector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [m for m in node.matchers.matchers if m.name != "__name__"]
            ops = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~"}
            found.append(
                Selector(
                    node.name,
                    tuple(m.name for m in matchers),
                    tuple((m.name, ops.get(str(m.op), "!~"), m.value) for m in matchers),
                )
            )

    promql_parser.walk(promql_parser.parse(expr), visit)
    yield from found


def unknown_references(expr: str, also: frozenset[str] = frozenset()) -> list[str]:
    """What ``expr`` names that no service exports: metrics, or labels a metric does not have.
    ``also``: series defined elsewhere (recording rules)."""
    known = exported()
    problems: list[str] = []
    for selector in selectors(expr):
        name = selector.name
        if name is None:
            problems.append(f"a selector without a metric name in {expr!r}")
            continue
        if name in also or name in PROMETHEUS_SERIES:
            continue
        if name not in known:
            problems.append(f"{name} is exported by no service")
            continue
        allowed = known.labels[name] | TARGET_LABELS | PROMETHEUS_LABELS
        problems += [
            f"{name} has no label {label!r}" for label in selector.labels if label not in allowed
        ]
    return problems
