"""Object storage for scans and artefacts: a local folder (default) or S3 (``s3://bucket/prefix``), same keys.

Keys are '/'-separated relative keys such as ``site-a/cam-1/reference_scan/manifest.json``. S3 goes through
dagster-aws's ``S3Resource`` (region, endpoint, profile, retries; ptz_pipeline.settings builds it), over
boto3's standard configuration (``AWS_ENDPOINT_URL``, credentials chain), so S3-compatible stores work too.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

_TMP_PREFIX = ".ptz-tmp-"
_IN_FLIGHT: dict[int, str] = {}
"""Thread id -> the storage call that thread is in now (for deadline messages: which key did not answer)."""


def in_flight(thread_id: int | None) -> str | None:
    """The storage call (operation, key, url) thread ``thread_id`` is blocked in, None when it is in none."""
    return _IN_FLIGHT.get(thread_id) if thread_id is not None else None


class StorageError(RuntimeError):
    """A storage operation failed (missing key, unreachable bucket, bad key); names the key and the url."""


class MissingKeyError(StorageError, FileNotFoundError):
    """The key does not exist (also a FileNotFoundError, so callers and the command line treat it as one)."""


def _check_key(key: str, *, allow_empty: bool = False) -> str:
    """Validate a relative '/'-separated key (or prefix); returns it without a trailing '/'."""
    stripped = key.rstrip("/")
    if not stripped:
        if allow_empty:
            return ""
        raise ValueError("storage key must not be empty")
    if stripped.startswith("/") or "\\" in stripped:
        raise ValueError(f"storage key {key!r} must be relative and '/'-separated")
    for part in stripped.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"storage key {key!r} must not contain empty, '.' or '..' segments")
        if part.startswith(_TMP_PREFIX):
            raise ValueError(f"storage key {key!r} uses the reserved prefix {_TMP_PREFIX!r}")
    return stripped


class _Backend(Protocol):
    """What both backends implement; keys are already validated."""

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def uri(self, key: str) -> str: ...


class _LocalBackend:
    """Keys are files under ``root``; writes go to a temp file in the same folder, then os.replace."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/")) if key else self.root

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(
            f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        )  # "x" mode: umask permissions, like a plain write
        try:
            with tmp.open("xb") as file:
                file.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyError(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith(_TMP_PREFIX)
        )

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class _S3Backend:
    """Keys are objects ``<prefix>/<key>`` in ``bucket``; a prefix lists the objects under ``<prefix>/``."""

    def __init__(self, bucket: str, base: str, client: Any) -> None:
        self.bucket = bucket
        self.base = base
        self.client = client

    def _object_key(self, key: str) -> str:
        return "/".join(part for part in (self.base, key) if part)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise KeyError(key) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _iter_object_keys(self, prefix: str) -> list[str]:
        folder = self._object_key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=f"{folder}/" if folder else "")
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def list_keys(self, prefix: str) -> list[str]:
        strip = len(self.base) + 1 if self.base else 0
        object_keys = self._iter_object_keys(prefix)
        return sorted(k[strip:] for k in object_keys if not k.endswith("/"))  # skip console folder markers

    def delete_prefix(self, prefix: str) -> None:
        object_keys = self._iter_object_keys(prefix)
        for start in range(0, len(object_keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in object_keys[start : start + 1000]]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(
                    f"could not delete {first['Key']}: {first.get('Message', first.get('Code'))}"
                )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"


class ObjectStorageResource(dg.ConfigurableResource):
    """Scan and artefact storage: a local folder or ``s3://bucket/prefix``; the same keys on both.

    Errors (missing key, unreachable endpoint, missing bucket) raise StorageError naming the key and url.
    """

    url: str = Field(
        default=".ptz_data/storage",
        description="Local folder (relative to the working directory) or s3://bucket/prefix.",
    )
    calibration_versions_kept: int = Field(
        default=0,
        ge=0,
        description="Newest versions of each calibration artefact kept per camera; 0 keeps all "
        "(ptz_pipeline.versions).",
    )
    camera_hour_deadline_s: float = Field(
        default=120.0,
        gt=0.0,
        description="Seconds one camera-hour's estimation may take, storage reads included: an endpoint "
        "that accepts but never answers costs that camera-hour this long, never more.",
    )
    s3: S3Resource | None = Field(
        default=None,
        description="dagster-aws S3 resource for s3:// urls (region, endpoint, profile, retries); None: "
        "boto3's environment with 3 attempts.",
    )

    @cached_property
    def _backend(self) -> _Backend:
        if self.url.startswith("s3://"):
            bucket, _, base = self.url[len("s3://") :].partition("/")
            if not bucket:
                raise StorageError(f"storage url {self.url!r} names no bucket")
            s3 = self.s3 or S3Resource(max_attempts=3)
            return _S3Backend(bucket, _check_key(base, allow_empty=True), s3.get_client())
        if "://" in self.url:
            raise StorageError(f"storage url {self.url!r}: only local folders and s3:// are supported")
        return _LocalBackend(Path(self.url).expanduser().resolve())

    @contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        """Turn a backend failure into StorageError naming the operation, the key and the url; the call is
        recorded as in flight on this thread meanwhile (:func:`in_flight`)."""
        thread = threading.get_ident()
        _IN_FLIGHT[thread] = f"{operation} {key!r} in storage {self.url}"
        try:
            yield
        except StorageError:
            raise
        except KeyError as exc:
            raise MissingKeyError(f"{operation} {key!r}: no such key in storage {self.url}") from exc
        except Exception as exc:
            raise StorageError(f"{operation} {key!r} in storage {self.url} failed: {exc}") from exc
        finally:
            _IN_FLIGHT.pop(thread, None)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (atomic on the local backend: readers never see half a file)."""
        key = _check_key(key)
        with self._errors("put", key):
            self._backend.put_bytes(key, bytes(data))

    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``; StorageError if it does not exist."""
        key = _check_key(key)
        with self._errors("get", key):
            return self._backend.get_bytes(key)

    def exists(self, key: str) -> bool:
        """Whether an object (not a folder) exists at ``key``."""
        key = _check_key(key)
        with self._errors("exists", key):
            return self._backend.exists(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under the folder ``prefix`` (recursive, sorted, full keys); ``""`` lists everything."""
        prefix = _check_key(prefix, allow_empty=True)
        with self._errors("list", prefix):
            return self._backend.list_keys(prefix)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under the folder ``prefix`` (which must not be empty); no error if none."""
        prefix = _check_key(prefix)
        with self._errors("delete", prefix):
            self._backend.delete_prefix(prefix)

    def uri(self, key: str) -> str:
        """``file://`` or ``s3://`` URI of ``key`` (for Iceberg ``files_location`` and logs)."""
        key = _check_key(key, allow_empty=True)
        with self._errors("uri", key):
            return self._backend.uri(key)

    def put_json(self, key: str, value: Any) -> None:
        """Write ``value`` as indented UTF-8 JSON at ``key``."""
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))

    def get_json(self, key: str) -> Any:
        """Parse the JSON document at ``key``; StorageError if missing or not JSON."""
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"get {key!r} in storage {self.url}: not valid JSON: {exc}") from exc
