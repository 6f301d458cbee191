"""The contract from both ends: the unit's own sync client (agent/sync/client.py) against the real
headquarters service over HTTPS on 127.0.0.1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.evidence.keys import load_receipt_public
from agent.evidence.receipt import decode_receipt_header, make_heartbeat, verify_receipt
from hq.keygen import keygen
from tests.evidence_util import ChainBuilder
from tests.integration.test_hq_sync import enroll, manifest_hash, start_hq

client_mod = pytest.importorskip("agent.sync.client")
system_clock = pytest.importorskip("drivers.system_clock")


def test_the_unit_client_uploads_resumes_and_gets_receipts(tmp_path: Path) -> None:
    keygen(tmp_path / "H" / "keys")
    hq = start_hq(tmp_path / "H")
    try:
        unit = ChainBuilder(tmp_path / "unit", device_id="unit-77")
        paths = unit.incident(segments=1)
        enroll(hq, unit, tmp_path)
        client = client_mod.HqClient(
            f"https://127.0.0.1:{hq.port}/", hq.keys / "ca.pem", "unit-77", unit.signer, system_clock.SystemClock()
        )
        receipt_key = load_receipt_public(hq.keys / "hq.pub")
        for seq, path in enumerate(paths):
            data = path.read_bytes()
            meta = {"device_id": "unit-77", "seq": str(seq), "filename": path.name}
            url = client.create(len(data), {**meta, "sha256": hashlib.sha256(data).hexdigest()})
            offset = client.head(url).offset
            while offset < len(data):
                chunk = data[offset : offset + 64 * 1024]
                result = client.append(url, offset, chunk, last=offset + len(chunk) == len(data))
                offset = result.offset
            doc = verify_receipt(decode_receipt_header(result.receipt_b64), receipt_key)
            assert (doc["seq"], doc["manifest_sha256"]) == (seq, manifest_hash(path))
        # A unit that lost the last answer creates again, finds the upload complete, and asks for
        # the receipt with an empty PATCH at the end.
        data = paths[2].read_bytes()
        meta = {"device_id": "unit-77", "seq": "2", "filename": paths[2].name}
        url = client.create(len(data), {**meta, "sha256": hashlib.sha256(data).hexdigest()})
        info = client.head(url)
        assert info.offset == info.length == len(data)
        again = client.append(url, info.offset, b"", last=True)
        assert verify_receipt(decode_receipt_header(again.receipt_b64), receipt_key)["seq"] == 2
        assert client.heartbeat(make_heartbeat({"battery_pct": 50}, unit.signer))["ok"] is True
        client.close()
    finally:
        hq.stop()
