"""Versioned calibration artefacts: intrinsics, reference scans and R_align are never overwritten.

Layout (same keys on a local folder or S3), per camera and artefact folder (``intrinsics``,
``reference_scan``, ``r_align``)::

    {deployment}/{camera}/{folder}/versions.json          the index: every committed version, oldest first
    {deployment}/{camera}/{folder}/v0001/...              one folder per version (the artefact's files)
    {deployment}/{camera}/{folder}/{calibration.npz | manifest.json, images/, features/ | R_align.npy}
                                                          the seed's unversioned files: version 0

A new version is written in two steps: every file into its own folder, then the index (one atomic object
write). A kill or a storage error in between leaves the folder unlisted, so the previous version stays
current; the next attempt reuses the number and clears the leftovers first. Writers of one artefact of one
camera are assumed not to run concurrently (one calibration run per camera at a time).

Which version an hour uses (:func:`valid_at`): the newest whose ``valid_from`` (UTC, when its index entry
was committed) is at or before the hour's start. Version 0 (the seed's files) has no known creation time and
counts as valid since ever. An hour that begins before every version (a query captured before the first
calibration) uses the OLDEST version and is flagged, so its row says its calibration came later.

Retention: the storage resource's ``calibration_versions_kept`` (0: keep all, the default) keeps that many
newest numbered versions; older entries leave the index first, then their folders are deleted. Version 0 is
never deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

Artefact = Literal["intrinsics", "reference", "r_align"]
FOLDERS: dict[Artefact, str] = {
    "intrinsics": "intrinsics",
    "reference": "reference_scan",
    "r_align": "r_align",
}
"""Artefact -> its folder under the camera's storage prefix."""
SEED_FILES: dict[Artefact, str] = {
    "intrinsics": "calibration.npz",
    "reference": "manifest.json",
    "r_align": "R_align.npy",
}
"""The file whose presence in the unversioned folder makes the seed's artefact version 0."""
INDEX = "versions.json"


class VersionStorage(Protocol):
    """What versions need from object storage (ObjectStorageResource satisfies it)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def uri(self, key: str) -> str: ...
    def delete_prefix(self, prefix: str) -> None: ...


class Version(BaseModel):
    """One committed version of an artefact: its number, when it became valid (UTC; None for the seed's
    version 0: valid since ever), the storage prefix of its files and provenance (run id, inputs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=0)
    valid_from: AwareDatetime | None
    prefix: str
    provenance: dict[str, Any] = Field(default_factory=dict)


class _Index(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versions: list[Version]


def utc_now() -> datetime:
    """The clock versions are stamped with (a function, so tests can step it)."""
    return datetime.now(UTC)


def artefact_prefix(deployment: str, camera: str, artefact: Artefact) -> str:
    """The artefact's folder: the seed's files, the index and the version folders live under it."""
    return f"{deployment}/{camera}/{FOLDERS[artefact]}"


def version_prefix(deployment: str, camera: str, artefact: Artefact, number: int) -> str:
    """Folder of version ``number`` (0: the seed's unversioned folder itself)."""
    base = artefact_prefix(deployment, camera, artefact)
    return base if number == 0 else f"{base}/v{number:04d}"


def _index_key(deployment: str, camera: str, artefact: Artefact) -> str:
    return f"{artefact_prefix(deployment, camera, artefact)}/{INDEX}"


def _read_index(storage: VersionStorage, key: str) -> list[Version]:
    """The versions listed at ``key`` (none when absent); ValueError naming the file when it is unreadable."""
    if not storage.exists(key):
        return []
    try:
        return _Index.model_validate_json(storage.get_bytes(key)).versions
    except ValidationError as exc:
        raise ValueError(f"{storage.uri(key)}: not a version index ({exc.errors()[0]['msg']})") from None


def list_versions(storage: VersionStorage, deployment: str, camera: str, artefact: Artefact) -> list[Version]:
    """Every readable version, oldest first: the seed's version 0 when present, then the indexed ones."""
    base = artefact_prefix(deployment, camera, artefact)
    seed = (
        [Version(number=0, valid_from=None, prefix=base)]
        if storage.exists(f"{base}/{SEED_FILES[artefact]}")
        else []
    )
    return seed + _read_index(storage, _index_key(deployment, camera, artefact))


def current(storage: VersionStorage, deployment: str, camera: str, artefact: Artefact) -> Version | None:
    """The newest version (None when the artefact was never materialised)."""
    versions = list_versions(storage, deployment, camera, artefact)
    return versions[-1] if versions else None


def valid_at(versions: list[Version], hour: datetime) -> tuple[Version, bool]:
    """(the version an hour beginning at ``hour`` uses, whether it became valid only after that start).

    The newest version valid at or before ``hour``; when every version is newer, the oldest, flagged True.
    """
    if not versions:
        raise ValueError("no versions to choose from")
    before = [v for v in versions if v.valid_from is None or v.valid_from <= hour]
    return (before[-1], False) if before else (versions[0], True)


def begin_version(storage: VersionStorage, deployment: str, camera: str, artefact: Artefact) -> Version:
    """The next version's number and empty folder (leftovers of an attempt killed before its commit are
    deleted); write every file under ``.prefix``, then :func:`commit_version`."""
    indexed = _read_index(storage, _index_key(deployment, camera, artefact))
    number = indexed[-1].number + 1 if indexed else 1
    prefix = version_prefix(deployment, camera, artefact, number)
    storage.delete_prefix(prefix)
    return Version(number=number, valid_from=None, prefix=prefix)


def commit_version(
    storage: VersionStorage,
    deployment: str,
    camera: str,
    artefact: Artefact,
    new: Version,
    keep: int = 0,
    **provenance: Any,
) -> Version:
    """Make ``new`` (from :func:`begin_version`, its files written) the current version, valid from now.

    One index write switches versions. ``keep`` > 0 then keeps only that many newest numbered versions
    (index first, folders after, so a failure between leaves unlisted folders, never a dangling entry).
    """
    key = _index_key(deployment, camera, artefact)
    committed = new.model_copy(update={"valid_from": utc_now(), "provenance": provenance})
    versions = [*_read_index(storage, key), committed]
    kept = versions[-keep:] if keep > 0 else versions
    storage.put_bytes(key, _Index(versions=kept).model_dump_json(indent=2).encode())
    for old in versions[: len(versions) - len(kept)]:
        storage.delete_prefix(old.prefix)
    return committed
