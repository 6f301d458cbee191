"""Retention of heartbeats and nonces: what the periodic prune deletes or strips, in bounded
batches. The heartbeat policy lives in the database (``hq_policy``), where the triggers that
refuse any other delete or update read it too."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent.evidence.httpsig import NONCE_TTL_S
from hq.db.schema import devices, heartbeats, nonces, policy

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """How long heartbeat history is kept (by age, and by count per unit), and how long the GNSS
    position in it is kept (``position_max_age_s``, shorter: positions at rest are personal data)."""

    heartbeat_max_age_s: int
    heartbeat_max_per_unit: int
    position_max_age_s: int


@dataclass(frozen=True, slots=True)
class PruneLimits:
    """Settings of the periodic prune that are not the database's: the nonce lifetime (the
    request signatures' window), when a receiving upload counts as abandoned, the most rows one
    pass touches per kind (a pass never holds the database for long), and how often a nonce check
    deletes a batch of expired nonces itself (so the table stays bounded on every node)."""

    nonce_ttl_s: int = NONCE_TTL_S
    nonce_prune_interval_s: int = 60
    abandoned_upload_s: int = 24 * 3600
    batch_rows: int = 5000


def read_policy(conn: Connection) -> HeartbeatPolicy:
    row = conn.execute(sa.select(policy).where(policy.c.id == 1)).mappings().one()
    return HeartbeatPolicy(int(row["heartbeat_max_age_s"]), int(row["heartbeat_max_per_unit"]),
                           int(row["position_max_age_s"]))


def strip_position(body: bytes) -> bytes | None:
    """A heartbeat body without its GNSS position, or None when it holds none (kept as it is):
    ``{"position_stripped": true, "status": ...}`` with the status's ``gnss`` removed. The unit's
    signature goes too (it covered the position); the row keeps when it was received and what
    else the unit said. A body that is not a heartbeat's JSON keeps nothing but the mark."""
    try:
        doc = json.loads(body)
        status = doc.get("status") if isinstance(doc, dict) else None
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("gnss") is None:
        return None
    kept = {k: v for k, v in status.items() if k != "gnss"} if isinstance(status, dict) else None
    return json.dumps({"position_stripped": True, "status": kept}, sort_keys=True, separators=(",", ":")).encode()


def prune_nonces(conn: Connection, now_s: int, limits: PruneLimits) -> int:
    expired = (sa.select(nonces.c.key_id, nonces.c.nonce).where(nonces.c.seen_s < now_s - limits.nonce_ttl_s)
               .limit(limits.batch_rows))
    return int(conn.execute(nonces.delete().where(sa.tuple_(nonces.c.key_id, nonces.c.nonce).in_(expired)))
               .rowcount)


def prune_aged(conn: Connection, now_ns: int, p: HeartbeatPolicy, limits: PruneLimits) -> int:
    old = (sa.select(heartbeats.c.id).where(heartbeats.c.received_utc_ns < now_ns - p.heartbeat_max_age_s * NS_PER_S)
           .order_by(heartbeats.c.id).limit(limits.batch_rows))
    return int(conn.execute(heartbeats.delete().where(heartbeats.c.id.in_(old))).rowcount)


def prune_over_count(conn: Connection, p: HeartbeatPolicy, limits: PruneLimits) -> int:
    """Each unit keeps its newest ``heartbeat_max_per_unit`` heartbeats."""
    deleted = 0
    for (device_id,) in conn.execute(sa.select(devices.c.device_id).order_by(devices.c.device_id)).all():
        if deleted >= limits.batch_rows:
            break
        cutoff = conn.execute(sa.select(heartbeats.c.id).where(heartbeats.c.device_id == device_id)
                              .order_by(heartbeats.c.id.desc()).offset(p.heartbeat_max_per_unit - 1).limit(1)).scalar()
        if cutoff is None:
            continue
        older = (sa.select(heartbeats.c.id).where(heartbeats.c.device_id == device_id, heartbeats.c.id < cutoff)
                 .order_by(heartbeats.c.id).limit(limits.batch_rows - deleted))
        deleted += int(conn.execute(heartbeats.delete().where(heartbeats.c.id.in_(older))).rowcount)
    return deleted


def strip_positions(conn: Connection, now_ns: int, p: HeartbeatPolicy, limits: PruneLimits) -> int:
    """History older than the position retention loses its positions; so does a unit's last
    status once its last heartbeat is that old."""
    cutoff = now_ns - p.position_max_age_s * NS_PER_S
    rows = conn.execute(sa.select(heartbeats.c.id, heartbeats.c.body).where(
        heartbeats.c.position_stripped.is_(sa.false()), heartbeats.c.received_utc_ns < cutoff,
    ).order_by(heartbeats.c.position_stripped, heartbeats.c.received_utc_ns).limit(limits.batch_rows)).all()
    for row_id, body in rows:
        stripped = strip_position(bytes(body))
        conn.execute(heartbeats.update().where(heartbeats.c.id == row_id)
                     .values(body=bytes(body) if stripped is None else stripped, position_stripped=True))
    stale = conn.execute(sa.select(devices.c.device_id, devices.c.last_status).where(
        devices.c.last_heartbeat_utc_ns < cutoff, devices.c.last_status.like('%"gnss": {%'),
    ).limit(limits.batch_rows)).all()
    for device_id, text in stale:
        status = {k: v for k, v in json.loads(text).items() if k != "gnss"}
        conn.execute(devices.update().where(devices.c.device_id == device_id)
                     .values(last_status=json.dumps(status, sort_keys=True)))
    return len(rows)
