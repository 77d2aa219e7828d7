"""ObjectStorageResource: same behaviour on a local folder and on S3 (a real moto server over a socket)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from ptz_pipeline.resources.storage import ObjectStorageResource, StorageError

if TYPE_CHECKING:
    from ptz_pipeline_tests.servers import MotoS3

pytest_plugins = ["ptz_pipeline_tests.servers"]
pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorageResource:
    """A fresh, empty store of each kind."""
    if request.param == "local":
        return ObjectStorageResource(url=str(tmp_path / "store"))
    s3: MotoS3 = request.getfixturevalue("moto_s3")
    bucket = f"ptz-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3.create_bucket(bucket)
    return ObjectStorageResource(url=f"s3://{bucket}/monitoring")


def test_put_get_exists_round_trip(storage: ObjectStorageResource) -> None:
    data = bytes(range(256)) * 10
    key = "site-a/cam-1/reference_scan/images/000.jpg"
    assert not storage.exists(key)
    storage.put_bytes(key, data)
    assert storage.exists(key)
    assert storage.get_bytes(key) == data
    storage.put_bytes(key, b"replaced")
    assert storage.get_bytes(key) == b"replaced"


def test_json_round_trip(storage: ObjectStorageResource) -> None:
    manifest = {"camera": "site-a__cam-1", "kind": "reference", "frames": [{"pan": 45.0, "tilt": -10.0}]}
    storage.put_json("site-a/cam-1/reference_scan/manifest.json", manifest)
    assert storage.get_json("site-a/cam-1/reference_scan/manifest.json") == manifest


def test_list_keys_is_sorted_recursive_and_folder_scoped(storage: ObjectStorageResource) -> None:
    keys = [
        "site-a/cam-1/query_scan/2026-11-23T01:00:00Z/images/001.jpg",
        "site-a/cam-1/query_scan/2026-11-23T01:00:00Z/images/000.jpg",
        "site-a/cam-1/query_scan/2026-11-23T01:00:00Z/manifest.json",
        "site-a/cam-10/reference_scan/manifest.json",
        "site-b/cam-1/reference_scan/manifest.json",
    ]
    for key in keys:
        storage.put_bytes(key, key.encode())
    assert storage.list_keys() == sorted(keys)
    assert storage.list_keys("site-a/cam-1") == sorted(keys[:3])
    assert storage.list_keys("site-a/cam-1/") == sorted(keys[:3])  # "cam-1" is a folder, not "cam-1*"
    assert storage.list_keys("site-a/cam-1/query_scan/2026-11-23T01:00:00Z/images") == sorted(keys[:2])
    assert storage.list_keys("site-c") == []


def test_delete_prefix_removes_only_that_folder(storage: ObjectStorageResource) -> None:
    storage.put_bytes("site-a/cam-1/query_scan/t1/manifest.json", b"{}")
    storage.put_bytes("site-a/cam-1/query_scan/t1/images/000.jpg", b"jpg")
    storage.put_bytes("site-a/cam-1/query_scan/t2/manifest.json", b"{}")
    storage.delete_prefix("site-a/cam-1/query_scan/t1")
    assert storage.list_keys() == ["site-a/cam-1/query_scan/t2/manifest.json"]
    storage.delete_prefix("site-z")  # nothing there: no error


def test_missing_key_raises_storage_error_naming_key_and_url(storage: ObjectStorageResource) -> None:
    with pytest.raises(StorageError, match=r"'site-a/cam-1/missing\.json'.*no such key") as info:
        storage.get_bytes("site-a/cam-1/missing.json")
    assert storage.url in str(info.value)


def test_bad_json_raises_storage_error(storage: ObjectStorageResource) -> None:
    storage.put_bytes("site-a/broken.json", b'{"frames": [')
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.get_json("site-a/broken.json")


@pytest.mark.parametrize("key", ["../escape", "/absolute/key", "a/../b", "a//b", "", "a\\b", "a/./b"])
def test_rejects_unsafe_keys(storage: ObjectStorageResource, key: str) -> None:
    with pytest.raises(ValueError, match="storage key"):
        storage.put_bytes(key, b"x")


def test_delete_prefix_refuses_the_whole_store(storage: ObjectStorageResource) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        storage.delete_prefix("")


def test_uri(tmp_path: Path) -> None:
    local = ObjectStorageResource(url=str(tmp_path / "store"))
    assert local.uri("site-a/cam-1/manifest.json") == (tmp_path / "store/site-a/cam-1/manifest.json").as_uri()
    s3 = ObjectStorageResource(url="s3://bucket/some/prefix/")
    assert s3.uri("site-a/cam-1/manifest.json") == "s3://bucket/some/prefix/site-a/cam-1/manifest.json"
    assert ObjectStorageResource(url="s3://bucket").uri("k/x.jpg") == "s3://bucket/k/x.jpg"


def test_s3_objects_live_under_the_url_prefix(moto_s3: MotoS3) -> None:
    """The keys land at s3://bucket/<prefix>/<key>, seen by a plain boto3 client."""
    moto_s3.create_bucket("ptz-layout")
    storage = ObjectStorageResource(url="s3://ptz-layout/camera-calibration-monitoring")
    storage.put_bytes("site-a/cam-1/reference_scan/manifest.json", b"{}")
    listed = boto3.client("s3").list_objects_v2(Bucket="ptz-layout")["Contents"]
    assert [obj["Key"] for obj in listed] == [
        "camera-calibration-monitoring/site-a/cam-1/reference_scan/manifest.json"
    ]


def test_local_writes_are_atomic(tmp_path: Path) -> None:
    """A reader polling the manifest during many rewrites only ever sees complete documents."""
    storage = ObjectStorageResource(url=str(tmp_path))
    documents = [bytes([65 + i % 26]) * 2_000_000 for i in range(12)]
    storage.put_bytes("m.json", documents[0])
    seen: set[bytes] = set()
    done = threading.Event()

    def read_continuously() -> None:
        while not done.is_set():
            seen.add(storage.get_bytes("m.json"))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    for document in documents:
        storage.put_bytes("m.json", document)
    done.set()
    reader.join()
    assert seen <= set(documents)
    assert storage.list_keys() == ["m.json"]  # no temp files left behind
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask  # readable like a plain write


def test_unreachable_endpoint_raises_storage_error(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, unreachable_url: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", unreachable_url)  # credentials as for moto, nothing listening
    storage = ObjectStorageResource(url="s3://ptz-bucket/data")
    with pytest.raises(StorageError, match=r"get 'a/manifest\.json' in storage s3://ptz-bucket/data failed"):
        storage.get_bytes("a/manifest.json")


def test_missing_bucket_raises_storage_error(moto_s3: MotoS3) -> None:
    storage = ObjectStorageResource(url="s3://no-such-bucket")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        storage.put_bytes("a/b.json", b"{}")


def test_unsupported_url_scheme() -> None:
    with pytest.raises(StorageError, match="only local folders and s3://"):
        ObjectStorageResource(url="gs://bucket/x").exists("a")


def test_resource_in_an_asset(tmp_path: Path) -> None:
    """The resource works as a Dagster resource inside a materialization."""

    @dg.asset
    def manifest(storage: ObjectStorageResource) -> None:
        storage.put_json("site-a/cam-1/reference_scan/manifest.json", {"frames": []})

    result = dg.materialize([manifest], resources={"storage": ObjectStorageResource(url=str(tmp_path))})
    assert result.success
    assert (tmp_path / "site-a/cam-1/reference_scan/manifest.json").is_file()


def test_dagster_aws_s3_resource_decides_endpoint_region_and_profile(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, unreachable_url: str, tmp_path: Path
) -> None:
    """The S3Resource's endpoint and region win over boto3's environment (pointed nowhere here), its profile
    is used, and a resource pointed nowhere fails as a StorageError naming the operation and the url."""
    moto_s3.create_bucket("ptz-configured")
    monkeypatch.setenv("AWS_ENDPOINT_URL", unreachable_url)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    credentials = tmp_path / "credentials"
    credentials.write_text("[ptz]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    s3 = S3Resource(
        endpoint_url=moto_s3.endpoint_url, region_name="us-east-1", profile_name="ptz", max_attempts=1
    )
    storage = ObjectStorageResource(url="s3://ptz-configured/p", s3=s3)
    storage.put_bytes("a/b.json", b"{}")
    direct = boto3.client(
        "s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # fmt: skip
    assert direct.get_object(Bucket="ptz-configured", Key="p/a/b.json")["Body"].read() == b"{}"
    assert storage.list_keys() == ["a/b.json"]

    nowhere = ObjectStorageResource(
        url="s3://ptz-configured/p", s3=s3.model_copy(update={"endpoint_url": unreachable_url})
    )
    with pytest.raises(StorageError, match=r"get 'a/b\.json' in storage s3://ptz-configured/p failed"):
        nowhere.get_bytes("a/b.json")
    no_profile = ObjectStorageResource(
        url="s3://ptz-configured/p", s3=s3.model_copy(update={"profile_name": "missing"})
    )
    with pytest.raises(StorageError, match="missing.*could not be found"):
        no_profile.exists("a/b.json")


def test_storage_with_an_s3_resource_in_an_asset(moto_s3: MotoS3) -> None:
    """The nested S3Resource is configured and passed through by Dagster inside a materialization."""
    moto_s3.create_bucket("ptz-asset")

    @dg.asset
    def manifest(storage: ObjectStorageResource) -> None:
        storage.put_json("site-a/cam-1/reference_scan/manifest.json", {"frames": []})

    s3 = S3Resource(endpoint_url=moto_s3.endpoint_url, region_name="us-east-1")
    resource = ObjectStorageResource(url="s3://ptz-asset/camera-calibration-monitoring", s3=s3)
    assert dg.materialize([manifest], resources={"storage": resource}).success
    listed = boto3.client("s3").list_objects_v2(Bucket="ptz-asset")["Contents"]
    assert [o["Key"] for o in listed] == [
        "camera-calibration-monitoring/site-a/cam-1/reference_scan/manifest.json"
    ]
