"""The audit hash chain's definition: a fixed encoding (an export made today verifies with any
later version), and verification that names the first record changed, removed or reordered."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from zhongshu.runtime.auditchain import (
    GENESIS,
    Anchor,
    ChainRecord,
    Head,
    canonical,
    chain,
    verify,
    verify_tenant,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def records(n: int, tenant: str = "acme") -> list[ChainRecord]:
    return chain(
        [
            ChainRecord(
                tenant=tenant, pos=i, seq=10 + i, event_id=f"e{i}", kind="config",
                actor="ops", action="config.pushed", outcome="succeeded",
                at=T0 + timedelta(seconds=i), data={"target": "config", "labels": {"n": str(i)}},
            )
            for i in range(1, n + 1)
        ],
        GENESIS,
    )  # fmt: skip


def test_the_encoding_is_canonical_json_and_its_hash_is_fixed() -> None:
    first = records(1)[0]
    assert canonical(first, GENESIS) == (
        b'{"action":"config.pushed","actor":"ops","at":"2026-03-01T08:00:01.000000+00:00",'
        b'"data":{"labels":{"n":"1"},"target":"config"},"event_id":"e1","kind":"config",'
        b'"outcome":"succeeded","pos":1,"prev_hash":"' + GENESIS.encode() + b'","seq":11,'
        b'"tenant":"acme"}'
    )
    assert first.hash == hashlib.sha256(canonical(first, GENESIS)).hexdigest()
    # The same instant in another zone is the same record.
    shifted = replace(first, at=first.at.astimezone(timezone(timedelta(hours=8))))
    assert canonical(shifted, GENESIS) == canonical(first, GENESIS)


def test_an_intact_chain_verifies_and_each_link_follows_the_last() -> None:
    chained = records(4)
    assert [r.prev_hash for r in chained[1:]] == [r.hash for r in chained[:-1]]
    assert verify_tenant("acme", chained, head=Head(4, chained[-1].hash)) == (4, None)


def test_the_first_break_is_named() -> None:
    chained = records(5)
    changed = [*chained[:2], replace(chained[2], actor="mallory"), *chained[3:]]
    _, found = verify_tenant("acme", changed)
    assert found is not None
    assert (found.pos, found.problem) == (3, "its hash does not match its fields (changed)")

    _, found = verify_tenant("acme", [*chained[:1], *chained[2:]])
    assert found is not None
    assert (found.pos, found.problem) == (3, "position 2 missing before it (removed)")

    swapped = [chained[0], replace(chained[2], pos=2), replace(chained[1], pos=3), *chained[3:]]
    _, found = verify_tenant("acme", swapped)
    assert found is not None
    assert found.pos == 2
    assert "reordered" in found.problem

    _, found = verify_tenant("acme", chained[:-1], head=Head(5, chained[-1].hash))
    assert found is not None
    assert "removed from the end" in found.problem


def test_an_export_from_mid_chain_trusts_its_first_link_unless_anchored() -> None:
    tail = records(5)[2:]
    assert verify(tail, anchors=None).ok
    result = verify(tail, anchors={"acme": Anchor()})
    assert [b.describe() for b in result.breaks] == [
        "tenant acme: record 3 (stream seq 13, event e3): position 1–2 missing before it (removed)"
    ]
    assert verify(tail, anchors={"acme": Anchor(2, records(5)[1].hash)}).ok


def test_tenants_are_chained_and_verified_apart() -> None:
    both = [*records(3, "acme"), *records(2, "beta")]
    result = verify(both)
    assert result.ok
    assert result.records == {"acme": 3, "beta": 2}
