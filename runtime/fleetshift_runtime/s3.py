"""Signed S3 ``GetObject`` requests (AWS Signature Version 4), for any S3-compatible store.

A small signer instead of boto3 keeps the image slim (botocore alone is ~90 MB) and
the import fast; the runtime only ever needs ``GET`` of one object.

>>> creds = S3Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "")
>>> url, headers = signed_get(
...     S3Location("examplebucket", "test.txt"), endpoint="", region="us-east-1",
...     credentials=creds, addressing_style="virtual",
...     now=datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC),
... )
>>> url
'https://examplebucket.s3.us-east-1.amazonaws.com/test.txt'
>>> headers["Authorization"].split("Signature=")[0]  # doctest: +NORMALIZE_WHITESPACE
'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20130524/us-east-1/s3/aws4_request,
 SignedHeaders=host;x-amz-content-sha256;x-amz-date, '
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class S3Location:
    """A bucket and an object key."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Split ``s3://bucket/key``.

        >>> S3Location.parse("s3://models/churn/v2/model.tar.gz")
        S3Location(bucket='models', key='churn/v2/model.tar.gz')
        """
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        return cls(parts.netloc, parts.path.lstrip("/"))


@dataclass(frozen=True)
class S3Credentials:
    """Static credentials; all empty means anonymous (unsigned) requests."""

    access_key_id: str
    secret_access_key: str
    session_token: str

    @classmethod
    def from_env(cls) -> S3Credentials:
        """Read the standard AWS variables (a Kubernetes Secret is mounted as these)."""
        return cls(
            os.environ.get("AWS_ACCESS_KEY_ID", ""),
            os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            os.environ.get("AWS_SESSION_TOKEN", ""),
        )

    @property
    def anonymous(self) -> bool:
        """True when there is nothing to sign with."""
        return not (self.access_key_id and self.secret_access_key)


def resolve_endpoint(configured: str) -> str:
    """The S3 endpoint: the setting, then ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``."""
    return (
        configured
        or os.environ.get("AWS_ENDPOINT_URL_S3", "")
        or os.environ.get("AWS_ENDPOINT_URL", "")
    ).rstrip("/")


def resolve_region(configured: str) -> str:
    """The signing region: the setting, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, us-east-1."""
    return (
        configured
        or os.environ.get("AWS_REGION", "")
        or os.environ.get("AWS_DEFAULT_REGION", "")
        or "us-east-1"
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signed_get(
    location: S3Location,
    *,
    endpoint: str,
    region: str,
    credentials: S3Credentials,
    addressing_style: str = "auto",
    now: datetime.datetime | None = None,
) -> tuple[str, dict[str, str]]:
    """URL and headers of a SigV4-signed GET of one object."""
    return signed_request(
        "GET",
        location,
        endpoint=endpoint,
        region=region,
        credentials=credentials,
        addressing_style=addressing_style,
        now=now,
    )


def signed_request(
    method: str,
    location: S3Location,
    *,
    endpoint: str,
    region: str,
    credentials: S3Credentials,
    addressing_style: str = "auto",
    now: datetime.datetime | None = None,
    payload: bytes | None = None,
) -> tuple[str, dict[str, str]]:
    """URL and headers of a SigV4-signed request on one object (``payload``: the body of
    a PUT, whose hash is signed; None: unsigned, for a GET)."""
    if endpoint:
        base = urlsplit(endpoint)
        scheme, host = base.scheme or "https", base.netloc
        base_path = base.path.rstrip("/")
        virtual = addressing_style == "virtual"
    else:
        scheme, host, base_path = "https", f"s3.{region}.amazonaws.com", ""
        virtual = addressing_style != "path"
    encoded_key = quote(location.key, safe="/~")
    if virtual:
        host = f"{location.bucket}.{host}"
        path = f"{base_path}/{encoded_key}"
    else:
        path = f"{base_path}/{quote(location.bucket, safe='')}/{encoded_key}"
    url = f"{scheme}://{host}{path}"
    payload_hash = UNSIGNED_PAYLOAD if payload is None else hashlib.sha256(payload).hexdigest()
    headers = {"Host": host, "x-amz-content-sha256": payload_hash}
    if credentials.anonymous:
        return url, headers

    moment = now or datetime.datetime.now(datetime.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers["x-amz-date"] = amz_date
    if credentials.session_token:
        headers["x-amz-security-token"] = credentials.session_token
    signed = sorted((k.lower(), v.strip()) for k, v in headers.items())
    signed_names = ";".join(k for k, _ in signed)
    canonical_request = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{k}:{v}\n" for k, v in signed),
            signed_names,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + credentials.secret_access_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return url, headers
