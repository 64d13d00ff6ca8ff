"""Storage backends for the contract suite: memory://, a local tmp dir, and S3.

S3 is a real S3 API server (moto in server mode, as s3fs's own tests use) on a free
loopback port, started once per session; each test gets its own bucket. Nothing here
talks to the network beyond 127.0.0.1.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    server: Any

    def options(self, **client: Any) -> dict[str, Any]:
        return {
            "key": "testing",
            "secret": "testing",
            "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            **client,
        }

    def bucket(self) -> str:
        import boto3

        name = f"ckpt-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"http://127.0.0.1:{port}", server)
    server.stop()


@dataclass
class Backend:
    """A fresh, empty checkpoint root."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def store(self, **kw: Any):
        from supervisor.storage import CheckpointStore

        return CheckpointStore(self.url, storage_options=self.options or None, **kw)


@pytest.fixture(params=["memory", "local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Backend:
    if request.param == "memory":
        return Backend("memory", f"memory://ckpt-{uuid.uuid4().hex[:12]}")
    if request.param == "local":
        return Backend("local", str(tmp_path / "ckpt"))
    server: S3Server = request.getfixturevalue("s3_server")
    return Backend("s3", f"s3://{server.bucket()}/run", server.options())
