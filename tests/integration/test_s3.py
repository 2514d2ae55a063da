"""The S3 server (moto) started by `local/s3.sh`: write, list by prefix, read back, delete."""

from __future__ import annotations

import uuid

import pytest

from flows.blocks import LOCAL_S3_KEY_ID, LOCAL_S3_SECRET, S3Credentials


@pytest.fixture(scope="module")
def bucket(settings):
    """A uuid-named bucket on the local S3 server, emptied and removed afterwards."""
    from botocore.exceptions import BotoCoreError, ClientError

    creds = S3Credentials(endpoint_url=f"http://127.0.0.1:{settings.s3_port}",
                          access_key_id=LOCAL_S3_KEY_ID, secret_access_key=LOCAL_S3_SECRET)
    s3 = creds.get_client()
    name = f"aiship-test-{uuid.uuid4().hex[:12]}"
    try:
        s3.create_bucket(Bucket=name)
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(f"the S3 server does not answer on 127.0.0.1:{settings.s3_port} ({exc}); "
                    "start it with `aiship local up s3`")
    yield s3, name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def test_write_list_read_delete(bucket):
    s3, name = bucket
    prefix = f"models/{uuid.uuid4().hex[:8]}/"
    bodies = {f"{prefix}1/model.bin": b"\x00model-one", f"{prefix}2/model.bin": b"model-two\xff"}
    for key, body in bodies.items():
        s3.put_object(Bucket=name, Key=key, Body=body)
    s3.put_object(Bucket=name, Key="elsewhere/x.bin", Body=b"not listed")

    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix=prefix)["Contents"])
    assert listed == sorted(bodies)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=name, Key=key)["Body"].read() == body

    s3.delete_object(Bucket=name, Key=f"{prefix}1/model.bin")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix=prefix)["Contents"]]
    assert left == [f"{prefix}2/model.bin"]
