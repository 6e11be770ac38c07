"""Calls infergate's SageMaker-compatible route with boto3, as an existing client would.

Prints one JSON object: the response (body, content type, variant) or the error botocore
raised (its class name, code, message, HTTP status). Credentials and region come from the
environment, as for any boto3 program; retries are off so that throttling is visible.
"""

import argparse
import json
import sys

import boto3
import botocore.exceptions
from botocore.config import Config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--endpoint-name", default="fraud-xgb")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--accept", default="text/csv")
    parser.add_argument("--calls", type=int, default=1, help="invoke this many times; report the last")
    parser.add_argument("--enable-explanations", help="Clarify's EnableExplanations expression")
    args = parser.parse_args()

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=args.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = {}
    for _ in range(args.calls):
        try:
            extra = {}
            if args.enable_explanations is not None:
                extra["EnableExplanations"] = args.enable_explanations
            response = client.invoke_endpoint(
                EndpointName=args.endpoint_name,
                Body=body,
                ContentType="text/csv",
                Accept=args.accept,
                **extra,
            )
            result = {
                "body": response["Body"].read().decode(),
                "content_type": response["ContentType"],
                "variant": response.get("InvokedProductionVariant"),
            }
        except botocore.exceptions.ClientError as e:
            result = {
                "exception": type(e).__name__,
                "modelled": type(e) is not botocore.exceptions.ClientError,
                "code": e.response["Error"]["Code"],
                "message": e.response["Error"].get("Message", ""),
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            }
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
