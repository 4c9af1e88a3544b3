"""deploy/elk: Filebeat, Logstash, Elasticsearch's index template and ILM policy, Kibana's saved
objects, Metricbeat and the OpenTelemetry Collector. No Elasticsearch, Logstash or Kibana runs on
these machines, so what is checked is the files (they parse, they agree with each other, the
ILM phases are right) and that the services' own log lines carry, with the right types, every
field the template maps and the pipeline and the dashboards use."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy/elk"
PIPELINE = HERE / "logstash/pipeline/zhongshu.conf"
TEMPLATE = HERE / "elasticsearch/index-template.json"
ILM = HERE / "elasticsearch/ilm-policy.json"
KIBANA = HERE / "kibana/zhongshu.ndjson"
RULES = ROOT / "deploy/observability/rules/zhongshu.rules.yml"
LOGSTASH_PLUGINS = {
    "input": {"beats", "tcp", "http", "file", "stdin", "elastic_agent"},
    "filter": {"mutate", "ruby", "json", "date", "grok", "dissect", "prune", "drop"},
    "output": {"elasticsearch", "stdout"},
}
# Fields Filebeat and Logstash add to every record (not the services' to write).
SHIPPER_FIELDS = ("host.", "container.", "kubernetes.", "agent.", "data_stream.", "event.", "tags")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kibana_objects() -> list[dict[str, Any]]:
    lines = [line for line in KIBANA.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def mapped_fields(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The template's mapping as dotted field -> type."""
    found: dict[str, str] = {}
    for name, spec in properties.items():
        if "properties" in spec:
            found |= mapped_fields(spec["properties"], f"{prefix}{name}.")
        else:
            found[prefix + name] = spec["type"]
    return found


def template_fields() -> dict[str, str]:
    return mapped_fields(json.loads(TEMPLATE.read_text())["template"]["mappings"]["properties"])


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record with nested objects and dotted keys alike (``{"log.level": …}``, ``{"trace":
    {"id": …}}``) as dotted field -> value, the way Elasticsearch reads both."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


# ------------------------------------------------------------------------------------ files


def test_every_file_parses() -> None:
    for path in HERE.rglob("*.yml"):
        assert isinstance(load_yaml(path), dict), path
    for path in HERE.rglob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path
    objects = kibana_objects()
    assert objects
    for obj in objects:
        attributes = obj["attributes"]
        for key in ("visState", "panelsJSON", "optionsJSON", "uiStateJSON"):
            if key in attributes:
                json.loads(attributes[key])
        meta = attributes.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
        if meta:
            json.loads(meta)


TOKEN = re.compile(r"""#[^\n]*|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|=>|[{}\[\]]|\w+|\S""")


def logstash_blocks(text: str) -> list[tuple[str | None, str]]:
    """(enclosing block, name) for every plugin or section block of a Logstash config
    (conditionals and hash values are looked through); asserts braces and brackets balance."""
    tokens = [t for t in TOKEN.findall(text) if not t.startswith("#")]
    stack: list[tuple[str, str]] = []  # (kind, name): block, if, hash, array
    found: list[tuple[str | None, str]] = []
    conditional = False
    for i, token in enumerate(tokens):
        if token in ("if", "else"):
            conditional = True
        elif token == "{":
            if conditional:
                kind, conditional = ("if", ""), False
            elif i > 0 and tokens[i - 1] == "=>":
                kind = ("hash", "")
            else:
                kind = ("block", tokens[i - 1] if i > 0 else "")
                blocks = [name for k, name in stack if k == "block"]
                found.append((blocks[-1] if blocks else None, kind[1]))
            stack.append(kind)
        elif token == "[":
            stack.append(("array", ""))
        elif token in "}]":
            assert stack, f"unbalanced {token!r}"
            opened = stack.pop()
            assert (opened[0] == "array") == (token == "]"), f"{opened} closed by {token}"
    assert not stack, f"unclosed {stack}"
    return found


def test_the_logstash_pipeline_is_balanced_and_uses_known_plugins() -> None:
    blocks = logstash_blocks(PIPELINE.read_text())
    assert [name for parent, name in blocks if parent is None] == ["input", "filter", "output"]
    plugins = [(parent, name) for parent, name in blocks if parent in LOGSTASH_PLUGINS]
    assert plugins
    for section, name in plugins:
        assert name in LOGSTASH_PLUGINS[section], f"{section} plugin {name!r}"
    assert ("filter", "ruby") in plugins
    assert ("output", "elasticsearch") in plugins
    with pytest.raises(AssertionError):
        logstash_blocks("filter { mutate { } ")
    with pytest.raises(AssertionError):
        logstash_blocks("filter { mutate { add_field => [ } ] }")


def test_filebeat_logstash_and_elasticsearch_agree_on_ports_and_names() -> None:
    filebeat = load_yaml(HERE / "filebeat/filebeat.yml")
    pipeline = PIPELINE.read_text()
    [host] = filebeat["output.logstash"]["hosts"]
    port = re.search(r"beats\s*\{\s*port\s*=>\s*(\d+)", pipeline)
    assert port
    assert host.rstrip("}").endswith(f":{port.group(1)}")
    inputs = {i["id"]: i for i in filebeat["filebeat.inputs"]}
    for found in inputs.values():
        parsers = [next(iter(p)) for p in found["parsers"]]
        assert parsers[-1] == "ndjson", found["id"]  # ECS JSON decoded
        assert found["parsers"][-1]["ndjson"]["expand_keys"] is True  # "log.level" → log.level
    assert "container" in [next(iter(p)) for p in inputs["zhongshu-containers"]["parsers"]]
    processors = [next(iter(p)) for p in filebeat["processors"]]
    assert "add_kubernetes_metadata" in processors
    # Logstash writes logs-zhongshu-<namespace>, which the template matches with its ILM policy.
    assert 'data_stream_type => "logs"' in pipeline
    assert 'data_stream_dataset => "zhongshu"' in pipeline
    template = json.loads(TEMPLATE.read_text())
    assert template["index_patterns"] == ["logs-zhongshu-*"]
    assert template["data_stream"] == {}
    assert template["priority"] > 100  # above Elasticsearch's built-in logs-*-*
    assert template["template"]["settings"]["index.lifecycle.name"] == "zhongshu-logs"


def test_the_ilm_policy_keeps_logs_hot_7_days_warm_until_30_then_deletes_them() -> None:
    phases = json.loads(ILM.read_text())["policy"]["phases"]
    assert list(phases) == ["hot", "warm", "delete"]
    assert phases["hot"]["min_age"] == "0ms"
    assert "rollover" in phases["hot"]["actions"]
    assert phases["warm"]["min_age"] == "7d"
    assert phases["delete"]["min_age"] == "30d"
    assert phases["delete"]["actions"] == {"delete": {}}


def secret_pattern() -> re.Pattern[str]:
    """The pipeline's Ruby regex for secret-bearing field names, in Python's dialect."""
    found = re.search(r"secret = /(.+)/i", PIPELINE.read_text())
    assert found
    return re.compile(found.group(1).replace(r"\z", r"\Z"), re.IGNORECASE)


def test_the_pipeline_drops_fields_that_could_carry_secrets_and_keeps_the_ecs_ones() -> None:
    secret = secret_pattern()
    for name in (
        "authorization",
        "Authorization",
        "cookie",
        "X-Lark-Signature",
        "app_secret",
        "encrypt_key",
        "access_token",
        "password",
        "api_key",
        "token",
    ):
        assert secret.match(name), name
    for field in template_fields():
        for part in field.split("."):
            assert not secret.match(part), f"{field} would be dropped"
    assert not secret.match("input_tokens")  # GenAI token counts are not secrets
    assert "[event][original]" in PIPELINE.read_text()


def test_the_collector_sends_otlp_traces_to_elastic_apm_without_secret_attributes() -> None:
    config = load_yaml(HERE / "otel/otel-collector.yml")
    [pipeline] = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert pipeline["exporters"] == ["otlp/elastic-apm"]
    assert "attributes/drop-secrets" in pipeline["processors"]
    [action] = config["processors"]["attributes/drop-secrets"]["actions"]
    pattern = re.compile(action["pattern"].removeprefix("(?i)"), re.IGNORECASE)
    assert pattern.match("http.request.header.authorization")
    assert not pattern.match("gen_ai.usage.input_tokens")
    assert not pattern.match("messaging.destination.name")


# ------------------------------------------------------------------------------------ Kibana


def test_kibana_references_resolve_within_the_file() -> None:
    objects = kibana_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects)
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']} → {ref}"
        if obj["type"] == "dashboard":
            names = {ref["name"] for ref in obj["references"]}
            panels = json.loads(obj["attributes"]["panelsJSON"])
            assert {p["panelRefName"] for p in panels} == names


def kibana_fields(pattern: str) -> set[str]:
    """The fields Kibana's objects read from ``pattern`` (columns, sort, TSVB fields and
    splits, and fields named in their KQL)."""
    objects = kibana_objects()
    pattern_ids = {o["id"] for o in objects if o["type"] == "index-pattern"}
    by_title = {o["attributes"]["title"]: o["id"] for o in objects if o["id"] in pattern_ids}
    fields: set[str] = set()
    kql_field = re.compile(r"([\w.@:]+)\s*:")
    for obj in objects:
        attributes = obj["attributes"]
        if obj["type"] == "search":
            index = obj["references"][0]["id"]
            if index != by_title[pattern]:
                continue
            fields |= set(attributes["columns"]) | {s[0] for s in attributes["sort"]}
            source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
            fields |= set(kql_field.findall(source["query"]["query"]))
        if obj["type"] == "visualization":
            params = json.loads(attributes["visState"])["params"]
            if params.get("index_pattern") != pattern:
                continue
            fields.add(params["time_field"])
            for series in params["series"]:
                fields |= {m["field"] for m in series["metrics"] if "field" in m}
                if series.get("terms_field"):
                    fields.add(series["terms_field"])
                if series.get("filter"):
                    fields |= set(kql_field.findall(series["filter"]["query"]))
    return fields


def test_the_kibana_metrics_panels_read_series_prometheus_records() -> None:
    records = {
        rule["record"]: rule
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    fields = kibana_fields("metrics-zhongshu-*") - {"@timestamp"}
    assert fields
    for field in fields:
        if field.startswith("prometheus.metrics."):
            assert field.removeprefix("prometheus.metrics.") in records, field
        else:
            label = field.removeprefix("prometheus.labels.")
            assert field != label, field
            assert any(
                label in rule["expr"] or label in rule.get("labels", {})
                for rule in records.values()
            ), f"no recorded series has the label {label}"


# ------------------------------------------------------------------------------------ our logs

LOG_SCRIPT = textwrap.dedent(
    """
    import logging
    from zhongshu.runtime import telemetry

    telemetry.setup_tracing("ecs-probe")
    telemetry.setup_logging("ecs-probe")
    log = logging.getLogger("zhongshu.probe")
    with telemetry.tracer().start_as_current_span("conversation"):
        log.info("handled %s", "a message")
        try:
            raise ValueError("a refused reply")
        except ValueError:
            log.exception("send failed")
    log.warning("outside any span")
    """
)


@pytest.fixture(scope="module")
def log_lines() -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 3, done.stderr
    return [flatten(line) for line in lines]


def test_our_log_lines_have_every_field_the_pipeline_and_dashboards_rely_on(
    log_lines: list[dict[str, Any]],
) -> None:
    in_span, failed, outside = log_lines
    required = {
        "@timestamp",
        "log.level",
        "message",
        "service.name",
        "ecs.version",
        "log.logger",
        "trace.id",
        "span.id",
    }
    assert required <= set(in_span), required - set(in_span)
    assert {"error.type", "error.message", "error.stack_trace"} <= set(failed)
    assert failed["trace.id"] == in_span["trace.id"]  # one conversation, one trace.id
    assert "trace.id" not in outside
    used = kibana_fields("logs-zhongshu-*")
    produced = set(in_span) | set(failed)
    missing = {f for f in used if f not in produced and not f.startswith(SHIPPER_FIELDS)}
    assert not missing, f"Kibana reads fields our logs do not have: {missing}"


def test_every_field_we_log_is_mapped_with_a_type_its_value_fits(
    log_lines: list[dict[str, Any]],
) -> None:
    mapped = template_fields()
    checks = {
        "date": lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).tzinfo is not None,
        "keyword": lambda v: isinstance(v, str),
        "match_only_text": lambda v: isinstance(v, str),
        "wildcard": lambda v: isinstance(v, str),
        "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    }
    for line in log_lines:
        for field, value in line.items():
            assert field in mapped, f"{field} is not mapped by the index template"
            assert checks[mapped[field]](value), f"{field}={value!r} is no {mapped[field]}"
    first = log_lines[0]
    assert re.fullmatch(r"[0-9a-f]{32}", first["trace.id"])
    assert re.fullmatch(r"[0-9a-f]{16}", first["span.id"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", first["ecs.version"])
    assert [line["log.level"] for line in log_lines] == ["info", "error", "warning"]
    assert {line["service.name"] for line in log_lines} == {"ecs-probe"}
    assert first["@timestamp"].endswith("Z")
    for field in ("@timestamp", "log.level", "message", "service.name", "trace.id"):
        assert field in mapped, field
