"""The index's pure parts: the audit chain's encoding and walk, and stripping positions."""

from __future__ import annotations

import hashlib
import json

from hq.db.chain import GENESIS, ChainRow, ChainWalker, record_hash
from hq.db.engine import mask
from hq.db.locks import device_key
from hq.db.retention import strip_position


def test_the_record_hash_is_the_documented_encoding() -> None:
    """docs/architecture.md: SHA-256 of the domain line and the compact JSON array of prev and the
    fields; stored chains depend on these exact bytes."""
    written = ('bodycam-audit-v1\n["' + GENESIS + '",1790000000000000000,"hq-cli","enroll","admin",'
               '"unit-1","ok","{\\"n\\": 1, \\"who\\": \\"Zoë\\"}"]')
    detail = json.dumps({"n": 1, "who": "Zoë"}, sort_keys=True, ensure_ascii=False)
    expected = hashlib.sha256(written.encode("utf-8")).hexdigest()
    assert record_hash(GENESIS, 1_790_000_000_000_000_000, "hq-cli", "enroll", "admin", "unit-1", "ok",
                       detail) == expected


def chain(count: int) -> list[ChainRow]:
    rows, prev = [], GENESIS
    for n in range(count):
        digest = record_hash(prev, n, "hq-api", "auth", "unauthenticated", "/v1/x", "refused", "{}")
        rows.append(ChainRow(n + 1, n, "hq-api", "auth", "unauthenticated", "/v1/x", "refused", "{}", prev, digest))
        prev = digest
    return rows


def test_the_walker_stops_at_the_first_broken_link() -> None:
    rows = chain(5)
    walker = ChainWalker()
    assert walker.feed(rows[:2]) and walker.feed(rows[2:])
    report = walker.report()
    assert report.intact and report.records == 5 and report.head_sha256 == rows[-1].sha256
    assert report.summary() == f"5 records, chain intact, head {rows[-1].sha256}"

    changed = [*rows[:3], ChainRow(**{**_fields(rows[3]), "outcome": "ok"}), rows[4]]
    broken = ChainWalker()
    assert not broken.feed(changed)
    assert (broken.report().broken_id, broken.report().records) == (4, 3)
    assert "do not hash" in str(broken.report().problem)

    gap = ChainWalker()
    gap.feed([*rows[:2], *rows[3:]])
    assert gap.report().broken_id == 4 and "previous record" in str(gap.report().problem)
    assert gap.report().summary().startswith("audit record 4: ")


def _fields(row: ChainRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in ChainRow.__slots__}


def test_positions_are_stripped_and_nothing_else() -> None:
    body = json.dumps({"sig": "c2ln", "status": {"battery": 80, "gnss": {"lat_deg": "52.1"}}}).encode()
    stripped = strip_position(body)
    assert stripped is not None and json.loads(stripped) == {"position_stripped": True, "status": {"battery": 80}}
    assert strip_position(json.dumps({"sig": "x", "status": {"gnss": None}}).encode()) is None
    assert json.loads(strip_position(b"\xff not json") or b"") == {"position_stripped": True, "status": None}


def test_urls_lose_only_their_password_and_device_keys_are_stable() -> None:
    assert mask("postgresql+psycopg://hq:pw@db:5432/bodycam?sslmode=verify-full") == (
        "postgresql+psycopg://hq:***@db:5432/bodycam?sslmode=verify-full")
    assert mask("postgresql+psycopg://hq@db/bodycam") == "postgresql+psycopg://hq@db/bodycam"
    key = device_key("unit-0042")
    assert key == device_key("unit-0042") and -(2**31) <= key < 2**31 and key != device_key("unit-0043")
