#!/usr/bin/env python3
"""Generate SigV4 verification fixtures signed by botocore.

The gateway's SigV4 verifier (src/middleware/sigv4.rs) must accept requests
signed by the same code that boto3 and the AWS CLI use. This script signs a
handful of requests with botocore at fixed dates and with fixed, publicly
documented example credentials, and writes one JSON file per request into
``tests/fixtures/sigv4/``. The Rust tests replay them with ``now`` set to the
fixture's date.

Two kinds of fixtures are produced:

* ``client``: a real botocore ``sagemaker-runtime`` client (``InvokeEndpoint``)
  pointed at a local ``endpoint_url``. The prepared request is captured just
  before it would be sent, so path serialisation, headers and signing are
  exactly what boto3 / ``aws sagemaker-runtime invoke-endpoint
  --endpoint-url ...`` produce. Nothing is sent over the network.
* ``auth``: ``botocore.auth.SigV4Auth`` applied directly to a hand-built
  ``AWSRequest``, for shapes the SageMaker model cannot express (API Gateway
  style ``execute-api`` requests, query strings, GET with an empty body,
  an explicit ``X-Amz-Content-SHA256`` header).

Usage (from the repository root; needs ``botocore`` in the venv):

    .venv/bin/pip install botocore
    .venv/bin/python scripts/sign_request.py [--out-dir tests/fixtures/sigv4]

Re-running with the same botocore version rewrites byte-identical files.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
import uuid
from urllib.parse import urlsplit

# Keep any local AWS configuration out of the signed requests: the client
# fixtures must depend only on what this script passes explicitly.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)

import botocore  # noqa: E402
import botocore.auth  # noqa: E402
import botocore.session  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

# The example key pair from the AWS SigV4 documentation and test suite; it is
# not a real credential.
ACCESS_KEY_ID = "AKIDEXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN//////////wEaDEXAMPLE="
REGION = "eu-west-1"

def fixed_clock(stamp: str):
    """Return a replacement for botocore's clock that always yields `stamp`."""
    when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")

    def now(remove_tzinfo: bool = True) -> datetime.datetime:
        if remove_tzinfo:
            return when
        return when.replace(tzinfo=datetime.timezone.utc)

    return now


def host_header(url: str) -> str:
    """The Host header an HTTP client sends for `url` (default ports omitted)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    if parts.port is None or parts.port == default:
        return parts.hostname
    return f"{parts.hostname}:{parts.port}"


def wire_request(method: str, url: str, headers, body: bytes) -> dict:
    parts = urlsplit(url)
    uri = parts.path or "/"
    if parts.query:
        uri += "?" + parts.query
    pairs = []
    for name, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if name.lower() == "user-agent":
            # Unsigned (botocore never signs it) and full of host details such
            # as the kernel and Python versions; pin it so reruns are stable.
            value = f"Botocore/{botocore.__version__} sign_request.py"
        pairs.append((str(name), str(value)))
    if not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("Host", host_header(url)))
    return {
        "method": method,
        "url": url,
        "uri": uri,
        "headers": [[k, v] for k, v in pairs],
        "body": body.decode("utf-8"),
    }


class _Captured(Exception):
    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def _fixed_uuid4() -> uuid.UUID:
    # botocore puts a fresh UUID into the unsigned amz-sdk-invocation-id header.
    return uuid.UUID(int=0x5167_4000_8000_0000_0000_0000_0000_0001)


def sign_with_client(
    stamp: str,
    endpoint_url: str,
    endpoint_name: str,
    body: bytes,
    validate: bool = True,
) -> dict:
    """Run InvokeEndpoint through a real botocore client and capture the request."""
    botocore.auth.get_current_datetime = fixed_clock(stamp)
    uuid.uuid4 = _fixed_uuid4
    session = botocore.session.get_session()
    client = session.create_client(
        "sagemaker-runtime",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(
            parameter_validation=validate,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )

    def capture(request, **_kwargs):
        raise _Captured(request)

    client.meta.events.register("before-send.sagemaker-runtime.*", capture)
    try:
        client.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=body,
        )
    except _Captured as captured:
        prepared = captured.request
    else:  # pragma: no cover - the handler always raises
        raise RuntimeError("request was not captured")
    body_bytes = prepared.body or b""
    if isinstance(body_bytes, str):
        body_bytes = body_bytes.encode("utf-8")
    return wire_request(prepared.method, prepared.url, prepared.headers, body_bytes)


def sign_with_auth(
    stamp: str,
    service: str,
    method: str,
    url: str,
    headers: dict,
    body: bytes,
    token: str | None = None,
) -> dict:
    """Sign a hand-built request with SigV4Auth, as botocore does for every service."""
    botocore.auth.get_current_datetime = fixed_clock(stamp)
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    credentials = Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, token)
    botocore.auth.SigV4Auth(credentials, service, REGION).add_auth(request)
    return wire_request(method, url, request.headers, body)


def fixtures() -> dict[str, dict]:
    invoke_body = b'{"instances":[{"amount":129.5,"merchant":"m-77","country":"FR"}]}'
    score_body = b'{"transaction_id":"tx-0001","amount":42.0,"currency":"EUR"}'
    out: dict[str, dict] = {}

    out["sagemaker_invoke_endpoint"] = {
        "description": "boto3 sagemaker-runtime InvokeEndpoint against a local endpoint_url",
        "kind": "client",
        "service": "sagemaker",
        "date": "20261126T101530Z",
        **sign_with_client(
            "20261126T101530Z", "http://127.0.0.1:8080", "fraud-xgb", invoke_body
        ),
    }
    # Endpoint names cannot hold these characters in real SageMaker, so
    # validation is switched off: the point is to pin down how a path with a
    # space and an encoded slash is percent-encoded and signed.
    out["sagemaker_invoke_endpoint_escaped_path"] = {
        "description": "InvokeEndpoint whose endpoint name needs percent-encoding (space, slash)",
        "kind": "client",
        "service": "sagemaker",
        "date": "20261126T235959Z",
        **sign_with_client(
            "20261126T235959Z",
            "https://gateway.example.test",
            "fraud xgb/v2",
            invoke_body,
            validate=False,
        ),
    }
    out["execute_api_post_query"] = {
        "description": "API Gateway style POST with a JSON body and a query string",
        "kind": "auth",
        "service": "execute-api",
        "date": "20260301T080000Z",
        **sign_with_auth(
            "20260301T080000Z",
            "execute-api",
            "POST",
            "https://gateway.example.test/v1/score?model=fraud-xgb&explain=true&tag=a%20b",
            {"Content-Type": "application/json", "Accept": "application/json"},
            score_body,
        ),
    }
    out["execute_api_get_empty_body"] = {
        "description": "GET with an empty body, an escaped path segment and an unsorted query",
        "kind": "auth",
        "service": "execute-api",
        "date": "20260301T080000Z",
        **sign_with_auth(
            "20260301T080000Z",
            "execute-api",
            "GET",
            "https://gateway.example.test/v1/models/fraud%20xgb%2Fv2?version=3&format=json",
            {"Accept": "application/json"},
            b"",
        ),
    }
    out["execute_api_session_token"] = {
        "description": "temporary credentials: X-Amz-Security-Token is signed",
        "kind": "auth",
        "service": "execute-api",
        "date": "20260715T120000Z",
        "session_token": SESSION_TOKEN,
        **sign_with_auth(
            "20260715T120000Z",
            "execute-api",
            "POST",
            "https://gateway.example.test:8443/v1/score",
            {"Content-Type": "application/json"},
            score_body,
            token=SESSION_TOKEN,
        ),
    }
    out["execute_api_content_sha256"] = {
        "description": "X-Amz-Content-SHA256 sent and signed alongside the body",
        "kind": "auth",
        "service": "execute-api",
        "date": "20260715T120000Z",
        **sign_with_auth(
            "20260715T120000Z",
            "execute-api",
            "POST",
            "https://gateway.example.test/v1/score",
            {
                "Content-Type": "application/json",
                "X-Amz-Content-SHA256": hashlib.sha256(score_body).hexdigest(),
            },
            score_body,
        ),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="tests/fixtures/sigv4")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, fixture in fixtures().items():
        document = {
            "generator": f"scripts/sign_request.py (botocore {botocore.__version__})",
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "region": REGION,
            **fixture,
        }
        path = os.path.join(args.out_dir, f"botocore_{name}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False)
            handle.write("\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
