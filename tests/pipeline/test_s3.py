"""boto3's S3 client against a moto S3 server that sits behind ``authmw proxy``: list, put and get objects,
allowed and denied per IAM policy (with resources), bad signatures refused; SigV4 exactly as botocore sends it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from authmw.proxy import build_app
from authmw.settings import Settings
from tests.support.servers import free_port, serve_asgi
from tests.support.world import Key, World

S3_ROUTES = (
    {"method": "GET", "path": "/", "action": "s3:bucket:listAllMyBuckets"},
    {"method": "PUT", "path": "/{bucket}", "action": "s3:bucket:createBucket", "resource": "s3:*:*:bucket:{bucket}"},
    {"method": "HEAD", "path": "/{bucket}", "action": "s3:bucket:headBucket", "resource": "s3:*:*:bucket:{bucket}"},
    {"method": "GET", "path": "/{bucket}", "action": "s3:bucket:listBucket", "resource": "s3:*:*:bucket:{bucket}"},
    *(
        {
            "method": method,
            "path": "/{bucket}/{key+}",
            "action": f"s3:object:{operation}",
            "resource": "s3:*:*:object:{bucket}/{key}",
            "path_allow": ["encoded-dot"],
        }
        for method, operation in (
            ("PUT", "putObject"),
            ("GET", "getObject"),
            ("HEAD", "getObject"),
            ("DELETE", "deleteObject"),
        )
    ),
)
READ_DATA = {
    "Version": "1.1",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:bucket:listBucket", "s3:bucket:headBucket"],
            "Resource": ["s3:*:*:bucket:data"],
        },
        {"Effect": "Allow", "Action": ["s3:object:getObject"], "Resource": ["s3:*:*:object:data/*"]},
    ],
}
WRITE_ALL = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["s3:*:*"]}]}


@pytest.fixture(scope="module")
def s3_keys(world: World) -> dict[str, Key]:
    keys = {}
    for name, policy in (("s3-reader", READ_DATA), ("s3-writer", WRITE_ALL)):
        world.store.create_policy(f"{name}-policy", json.dumps(policy))
        world.store.create_user(name)
        world.store.attach_policy(f"{name}-policy", user=name)
        created = world.store.create_access_key(name)
        keys[name] = Key(created.access, created.secret)
    return keys


@pytest.fixture(scope="module")
def proxy_url(world: World) -> Iterator[str]:
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        # moto answers an anonymous request (no Authorization) as S3 does: 403. It reads the caller's credentials,
        # so the proxy must forward them.
        settings = Settings(routes=S3_ROUTES, upstream=f"http://127.0.0.1:{port}", forward_credentials=True)
        app = build_app(settings, world.store)
        with serve_asgi(app) as url:
            yield url
    finally:
        moto.stop()


def s3(url: str, key: Key) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key.access,
        aws_secret_access_key=key.secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def status_of(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture(scope="module")
def filled(proxy_url: str, s3_keys: dict[str, Key]) -> str:
    """Two buckets with one object each, created by the writer through authmw."""
    client = s3(proxy_url, s3_keys["s3-writer"])
    client.create_bucket(Bucket="data")
    client.create_bucket(Bucket="secret")
    client.put_object(Bucket="data", Key="reports/2026/q4.csv", Body=b"a,b\n1,2\n")
    client.put_object(Bucket="secret", Key="plans.txt", Body=b"classified")
    return proxy_url


def test_a_writer_creates_lists_puts_and_gets(filled: str, s3_keys: dict[str, Key]) -> None:
    client = s3(filled, s3_keys["s3-writer"])
    listed = client.list_objects_v2(Bucket="data")
    assert [o["Key"] for o in listed["Contents"]] == ["reports/2026/q4.csv"]
    assert client.get_object(Bucket="data", Key="reports/2026/q4.csv")["Body"].read() == b"a,b\n1,2\n"
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} >= {"data", "secret"}


def test_a_reader_reads_its_bucket_only(filled: str, s3_keys: dict[str, Key]) -> None:
    client = s3(filled, s3_keys["s3-reader"])
    assert client.get_object(Bucket="data", Key="reports/2026/q4.csv")["Body"].read() == b"a,b\n1,2\n"
    assert client.list_objects_v2(Bucket="data")["KeyCount"] == 1
    client.head_bucket(Bucket="data")
    with pytest.raises(ClientError) as put:
        client.put_object(Bucket="data", Key="reports/new.csv", Body=b"x")
    assert status_of(put.value) == 403
    with pytest.raises(ClientError) as other:
        client.get_object(Bucket="secret", Key="plans.txt")
    assert status_of(other.value) == 403
    with pytest.raises(ClientError) as listing:
        client.list_buckets()
    assert status_of(listing.value) == 403


def test_a_wrong_secret_is_refused(filled: str, s3_keys: dict[str, Key]) -> None:
    wrong = Key(s3_keys["s3-reader"].access, "0" * 40)
    with pytest.raises(ClientError) as refused:
        s3(filled, wrong).get_object(Bucket="data", Key="reports/2026/q4.csv")
    assert status_of(refused.value) == 401
