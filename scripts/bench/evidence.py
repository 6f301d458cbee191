"""Evidence section: sealing throughput against openssl's own AES-GCM and SHA-256, and verification throughput."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from agent.evidence.segment import SegmentWriter
from agent.evidence.verify import find_files, verify_path
from tests.evidence_util import CONFIG_SHA, ChainBuilder, MemorySigner, time_fields

from .common import MB, MIB, Result, guarded, machine, parse_openssl_speed, ratio, require_tool, run_tool, seal_ceiling

log = logging.getLogger("bench.evidence")

CHUNK_SIZES = (64 * 1024, MIB)
WRITE_BYTES = MIB
SEAL_SEGMENT_BYTES = 64 * MIB
VERIFY_SEGMENT_BYTES = 8 * MIB
VERIFY_CHECKPOINTS = 10  # the agent checkpoints every second of a 10 s segment


class _Discard:
    """A sink that drops what it is given: the figure is the sealing, not the disk."""

    def write(self, data: bytes, /) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _figures(nbytes: int, wall_s: float, cpu_s: float) -> Result:
    return {
        "bytes": nbytes,
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "mb_per_s": round(nbytes / MB / wall_s, 1),
        "mb_per_cpu_s": round(nbytes / MB / cpu_s, 1) if cpu_s > 0 else None,
    }


def seal_throughput(total_bytes: int, chunk_bytes: int) -> Result:
    """Feed SegmentWriter 1 MiB writes of random data, a new segment every 64 MiB, into a discarding sink."""
    pool = memoryview(os.urandom(16 * MIB))  # generated once, outside the timing
    signer = MemorySigner()
    hq_public = x25519.X25519PrivateKey.generate().public_key()
    boot_id = str(uuid.uuid4())
    written = seq = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while written < total_bytes:
        writer = SegmentWriter(
            _Discard(),
            signer=signer,
            hq_public=hq_public,
            device_id="bench-unit",
            boot_id=boot_id,
            segment_id=str(uuid.uuid4()),
            chunk_bytes=chunk_bytes,
        )
        start = written
        while written - start < SEAL_SEGMENT_BYTES and written < total_bytes:
            off = written % len(pool)
            writer.write(pool[off : off + WRITE_BYTES])
            written += WRITE_BYTES
        writer.finish(
            seq=seq,
            prev=None,
            fields={"recording_id": None, "trigger": "button", "container": "application/octet-stream",
                    "tracks": [], "marks": []},
            firmware="bench",
            config_sha256=CONFIG_SHA,
            time=time_fields(seq * 10**10, (seq + 1) * 10**10),
            flags=[],
        )
        seq += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"chunk_bytes": chunk_bytes, "segments": seq, **_figures(written, wall, cpu)}


def openssl_speed(algorithm: str, row: str, nbytes: int, seconds: int) -> float:
    """Bytes per CPU-user second one core of openssl reaches (openssl's default divisor is user time)."""
    done = run_tool(
        ["openssl", "speed", "-evp", algorithm, "-bytes", str(nbytes), "-seconds", str(seconds)], timeout_s=120
    )
    return parse_openssl_speed(done.stdout, row)


def sealing(total_bytes: int, openssl_s: int) -> Result:
    require_tool("openssl")
    out: Result = {
        "params": {"total_bytes": total_bytes, "write_bytes": WRITE_BYTES, "segment_bytes": SEAL_SEGMENT_BYTES,
                   "openssl_seconds": openssl_s, "sink": "discards bytes (in memory)",
                   "openssl_commands": [f"openssl speed -evp {a} -bytes {n} -seconds {openssl_s}"
                                        for n in CHUNK_SIZES for a in ("aes-256-gcm", "sha256")]},
        "unit": "MB/s, MB = 10^6 bytes",
        "goal_ratio": 0.9,
        "note": "openssl speed divides by CPU user time (its default), so ratio_cpu compares like with like; "
        "ratio_wall uses the sealer's wall-clock rate and suffers whatever else runs on the machine. "
        "ceiling = 1/(1/aes + 2/sha): the writer encrypts once and hashes plaintext and ciphertext.",
    }
    for chunk in CHUNK_SIZES:
        log.info("sealing %d MiB with %d KiB chunks", total_bytes // MIB, chunk // 1024)
        sealed = seal_throughput(total_bytes, chunk)
        aes = openssl_speed("aes-256-gcm", "AES-256-GCM", chunk, openssl_s) / MB
        sha = openssl_speed("sha256", "sha256", chunk, openssl_s) / MB
        ceiling = seal_ceiling(aes, sha)
        out[f"chunk_{chunk // 1024}k"] = {
            "sealing": sealed,
            "openssl_aes_256_gcm_mb_per_s": round(aes, 1),
            "openssl_sha256_mb_per_s": round(sha, 1),
            "ceiling_mb_per_s": round(ceiling, 1),
            "ratio_cpu": ratio(sealed["mb_per_cpu_s"], aes),
            "ratio_wall": ratio(sealed["mb_per_s"], aes),
            "goal": 0.9,
            "of_ceiling_cpu": ratio(sealed["mb_per_cpu_s"], ceiling),
        }
    return out


def verification(total_bytes: int) -> Result:
    """Build a chain of 8 MiB segments, then time the public check and the check with headquarters' key."""
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-verify-") as tmp:
        folder = Path(tmp) / "segments"
        builder = ChainBuilder(folder)
        segments = max(1, total_bytes // VERIFY_SEGMENT_BYTES)
        log.info("building %d segments of %d MiB for verification", segments, VERIFY_SEGMENT_BYTES // MIB)
        builder.event("boot")
        builder.recording_id = str(uuid.uuid4())
        builder.event("record-start")
        for _ in range(segments):
            builder.segment(os.urandom(VERIFY_SEGMENT_BYTES), duration_ns=10 * 10**9, checkpoints=VERIFY_CHECKPOINTS)
        builder.event("record-stop")
        builder.event("shutdown")
        nbytes = sum(p.stat().st_size for p in find_files(folder))
        device_pub = builder.signer.public_key()
        out: Result = {
            "params": {"segments": segments, "segment_plaintext_bytes": VERIFY_SEGMENT_BYTES,
                       "checkpoints_per_segment": VERIFY_CHECKPOINTS, "chunk_bytes": builder.chunk_bytes,
                       "files_bytes": nbytes, "decode": None},
            "unit": "MB/s of evidence files, MB = 10^6 bytes; files are in the page cache",
        }
        for label, hq_key in (("public", None), ("with_hq_key", builder.hq_key)):
            log.info("verify_path (%s)", label)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            report = verify_path(folder, device_pub, hq_key=hq_key, decode=None)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            out[label] = {"ok": report.ok, **_figures(nbytes, wall, cpu)}
            if not report.ok:
                out[label]["problems"] = [p.as_dict() for p in report.problems[:5]]
        return out


def run(quick: bool) -> Result:
    seal_bytes = (64 if quick else 512) * MIB
    verify_bytes = (32 if quick else 256) * MIB
    return {
        "machine": machine(),
        "sealing": guarded("sealing", lambda: sealing(seal_bytes, 1 if quick else 3)),
        "verification": guarded("verification", lambda: verification(verify_bytes)),
    }
