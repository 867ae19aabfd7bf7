"""Prepares a moto S3 server for Volley's S3 tests.

`setup ENDPOINT BUCKET` creates the bucket, an IAM user allowed to use S3
and its access key, and prints the key as JSON: {"access_key_id": ...,
"secret_access_key": ...}. `enable-auth ENDPOINT` then turns authentication
on, so requests with an unknown key are refused (the tests check that bad
credentials give a clear error).

`upload ENDPOINT BUCKET DIR PREFIX` copies the files under DIR to
s3://BUCKET/PREFIX/ (same relative paths). `setup` waits up to a minute
for the server to answer first.

Usage: python3 moto_setup.py setup http://127.0.0.1:PORT BUCKET
       python3 moto_setup.py enable-auth http://127.0.0.1:PORT
       python3 moto_setup.py upload http://127.0.0.1:PORT BUCKET DIR PREFIX
       python3 moto_setup.py list http://127.0.0.1:PORT BUCKET PREFIX  (keys as JSON)
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

import boto3


def enable_auth(endpoint: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    urllib.request.urlopen(request).read()


def setup_client(service: str, endpoint: str):
    """A boto3 client with moto's setup credentials."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )


def wait_for(endpoint: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).read()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def upload(endpoint: str, bucket: str, root: str, prefix: str) -> None:
    s3 = setup_client("s3", endpoint)
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            key = f"{prefix}/{os.path.relpath(path, root)}"
            s3.upload_file(path, bucket, key)


def list_keys(endpoint: str, bucket: str, prefix: str) -> None:
    s3 = setup_client("s3", endpoint)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    print(json.dumps(sorted(keys)))


def setup(endpoint: str, bucket: str) -> None:
    wait_for(endpoint)
    setup_client("s3", endpoint).create_bucket(Bucket=bucket)
    iam = setup_client("iam", endpoint)
    iam.create_user(UserName="volley")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="volley", PolicyName="s3", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName="volley")["AccessKey"]
    print(
        json.dumps(
            {
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "list":
        list_keys(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "upload":
        upload(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "enable-auth":
        enable_auth(sys.argv[2])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
