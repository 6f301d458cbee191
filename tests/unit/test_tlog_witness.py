"""The witness (c2sp.org/tlog-witness), headquarters' cosigning pass and the unit's view of the
log, over a real log on SQLite: cosignatures only for append-only growth; forks refused and kept."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import note
from agent.evidence.tlogproof import TlogError, encode_consistency, log_verifier
from agent.sync.tlogview import ForkError, LogView, Witnessing
from hq.index import SqliteIndex
from hq.service import HqService
from hq.storage import FileEvidenceStore, UploadArea
from hq.tlog import Leaf, SqlLog
from hq.witness import Witness, request_body
from hq.witness_client import Cosigning, WitnessAt, WitnessPolicy, news

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"witness test log").digest())
ORIGIN = "hq.test/log"
LOG_V = log_verifier(ORIGIN, KEY.public_key())


def _witness(tmp_path: Path, key: ed25519.Ed25519PrivateKey | None = None) -> Witness:
    signer = note.Signer("court.test/w", key or ed25519.Ed25519PrivateKey.generate(), note.SIG_COSIGNATURE)
    return Witness(signer, [LOG_V], tmp_path / "w", lambda: 1_790_000_000)


def _log(path: Path) -> tuple[SqliteIndex, SqlLog]:
    index = SqliteIndex(path)
    return index, SqlLog(index.engine, ORIGIN, KEY)


def _grow(log: SqlLog, n: int, tag: bytes = b"") -> str:
    return log.append([Leaf("receipt", "u", i, tag + b"%d" % i) for i in range(n)], now_ns=1).checkpoint


def test_the_witness_cosigns_growth_and_refuses_a_fork(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    w = _witness(tmp_path)
    index, log = _log(tmp_path / "a.sqlite")
    first = _grow(log, 5)
    answer = w.add_checkpoint(request_body(0, [], first))
    assert answer.status == 200
    opened = note.open_checkpoint(note.add_signatures(first, answer.body.decode()), LOG_V,
                                  [w.signer.verifier], witness_quorum=1)
    assert opened.verified["court.test/w"] == 1_790_000_000
    second = _grow(log, 3)
    assert w.add_checkpoint(request_body(0, [], second)).body == b"5\n"  # 409: it holds size 5
    answer = w.add_checkpoint(request_body(5, log.consistency(5, 8), second))
    assert answer.status == 200
    # another history signed by the same key: refused, and kept as proof
    _, forked = _log(tmp_path / "b.sqlite")
    other = _grow(forked, 9, b"x")
    answer = w.add_checkpoint(request_body(8, forked.consistency(8, 9), other))
    assert answer.status == 422 and b"fork" in answer.body
    assert len(list((tmp_path / "w" / "forks").iterdir())) == 1
    # the witness remembers across a restart
    again = _witness(tmp_path)
    assert again.latest(ORIGIN)[0] == 8
    stranger = note.sign(note.Checkpoint(ORIGIN, 9, bytes(32)).text(), note.Signer(ORIGIN, ed25519.Ed25519PrivateKey
                                                                                    .generate()))
    assert again.add_checkpoint(request_body(8, [], stranger)).status == 403
    unknown = note.sign(note.Checkpoint("other/log", 1, bytes(32)).text(), note.Signer("other/log", KEY))
    assert again.add_checkpoint(request_body(0, [], unknown)).status == 404
    index.close()


def test_headquarters_keeps_the_cosignatures_its_witness_gives(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    w = _witness(tmp_path)
    index, log = _log(tmp_path / "a.sqlite")

    def post(url: str, body: bytes) -> tuple[int, bytes, str]:  # the witness, without HTTP
        a = w.add_checkpoint(body)
        return a.status, a.body, a.content_type

    cosigning = Cosigning(log, WitnessPolicy([WitnessAt("http://w", w.signer.verifier)]), lambda: 1, post)
    _grow(log, 4)
    assert cosigning.run() == {"court.test/w": "cosigned 4"}
    _grow(log, 2)
    fresh = Cosigning(log, WitnessPolicy([WitnessAt("http://w", w.signer.verifier)]), lambda: 1, post)
    assert fresh.run() == {"court.test/w": "cosigned 6"}  # learned the witness's size from its 409
    cosigned = log.cosigned()
    assert cosigned is not None
    assert note.open_checkpoint(cosigned, LOG_V, [w.signer.verifier], 1).checkpoint.size == 6
    index.close()


def test_the_unit_follows_the_log_and_keeps_proof_of_a_fork(tmp_path: Path) -> None:
    index, log = _log(tmp_path / "a.sqlite")
    view = LogView(tmp_path, KEY.public_key())
    assert view.heartbeat_answer(None) is False
    cp3 = _grow(log, 3)

    def answer(from_size: int, proof: list[bytes], signed: str) -> str:
        return base64.b64encode(encode_consistency(from_size, proof, signed)).decode()

    assert view.heartbeat_answer(answer(0, [], cp3)) and view.seen_size == 3
    cp7 = _grow(log, 4)
    assert view.heartbeat_answer(answer(3, log.consistency(3, 7), cp7)) and view.seen_size == 7
    assert LogView(tmp_path, KEY.public_key()).seen_size == 7  # kept on disk, checked again on loading
    _, forked = _log(tmp_path / "b.sqlite")
    other = _grow(forked, 10, b"x")
    with pytest.raises(ForkError, match="fork"):
        view.heartbeat_answer(answer(7, forked.consistency(7, 10), other))
    assert view.seen_size == 7 and len(list((tmp_path / "tlog-forks").iterdir())) == 1
    # a quorum the checkpoint lacks: not taken, not a fork
    witness = note.Signer("court.test/w", ed25519.Ed25519PrivateKey.generate(), note.SIG_COSIGNATURE)
    strict = LogView(tmp_path, KEY.public_key(), Witnessing((witness.verifier,), 1))
    cp9 = _grow(log, 2)
    with pytest.raises(TlogError, match="1 required"):
        strict.heartbeat_answer(answer(7, log.consistency(7, 9), cp9))
    cosigned = note.add_signatures(cp9, witness.signature_line(note.split(cp9)[0].encode(), 5))
    assert strict.heartbeat_answer(answer(7, log.consistency(7, 9), cosigned)) and strict.seen_size == 9
    index.close()


def test_witness_news_records_a_new_refusal_once_and_the_recovery() -> None:
    ok, refused = "cosigned 4", "refused 422: fork"
    assert news({}, {"w": ok}) == {}
    assert news({}, {"w": refused}) == {"w": refused}
    assert news({"w": refused}, {"w": refused}) == {}  # still refusing: already recorded
    assert news({"w": refused}, {"w": "failed: timed out"}) == {"w": "failed: timed out"}
    assert news({"w": refused}, {"w": "cosigned 9"}) == {"w": "cosigned 9"}  # it recovered
    assert news({"w": ok}, {"w": "cosigned 5", "v": refused}) == {"v": refused}


def test_a_refusing_witness_is_audited_once_and_its_answer_is_not_written_raw(tmp_path: Path) -> None:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"\x1b[2Jno such log\x07"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index, log = _log(tmp_path / "a.sqlite")
    verifier = _witness(tmp_path).signer.verifier
    policy = WitnessPolicy([WitnessAt(f"http://127.0.0.1:{server.server_address[1]}", verifier)])
    service = HqService(index, FileEvidenceStore(tmp_path), UploadArea(tmp_path), KEY, lambda: 1, tlog=log,
                        witnesses=policy)
    try:
        _grow(log, 3)
        service.maintain()
        service.maintain()
        records = index.audit_log("witness-cosign")
        assert [(r.outcome, r.target) for r in records] == [("refused", "witness:court.test/w")]
        detail = str(records[0].detail)
        assert "refused 403" in detail and "\x1b" not in detail and "\x07" not in detail
    finally:
        service.close()
        server.shutdown()
        index.close()
