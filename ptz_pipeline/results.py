"""The calibration_results row: one typed record per camera-hour, the seed's columns first.

The Iceberg schema (resources.iceberg), the report columns (assets.reports), the UI metadata, the Slack
report and the threshold rule all derive from :class:`ResultRow`. Angles are degrees; ``timestamp`` is the
UTC start of the hour the query belongs to; offsets and σ are null when the estimate failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from geometry.drift import DriftEstimate
    from ptz_pipeline.devices import CameraConfig

DEFAULT_THRESHOLD_DEG = 0.5
"""|offset| above this (degrees) alerts unless a camera sets its own ``offset_threshold_deg``."""


ANGLES = ("yaw", "pitch", "roll")
"""The drift's angles, in the order every (yaw, pitch, roll) tuple of the project uses."""
_CORRECTION_TEXT = "yaw {:+.4f} pitch {:+.4f} roll {:+.4f}"
"""The ``r_align_correction`` column's text: the correction Δ_p in degrees, 4 decimals."""


def parse_r_align_correction(text: object) -> tuple[float, float, float] | None:
    """The (yaw, pitch, roll) degrees of a row's ``r_align_correction`` text (:data:`_CORRECTION_TEXT`);
    None for a null / NaN cell. ValueError on any other text."""
    if not isinstance(text, str):
        return None
    words = text.split()
    if len(words) != 6 or tuple(words[0::2]) != ANGLES:
        raise ValueError(f"r_align_correction: expected 'yaw Y pitch P roll R' (degrees), got {text!r}")
    yaw, pitch, roll = (float(w) for w in words[1::2])
    return (yaw, pitch, roll)


def within_threshold(
    pitch: float | None, yaw: float | None, roll: float | None, success: bool, threshold_deg: float
) -> bool:
    """True (✅) when the estimate succeeded and every |offset| (degrees) is at most ``threshold_deg``."""
    return bool(success) and all(v is not None and abs(v) <= threshold_deg for v in (pitch, yaw, roll))


class CapturePosition(BaseModel):
    """Telemetry of one query frame: pan, tilt (degrees), zoom (0..1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    pan: float
    tilt: float
    zoom: float


@dataclass(frozen=True)
class UsedVersions:
    """The calibration versions a camera-hour used (None: not known, e.g. its calibration failed to load);
    ``note`` says when a version newer than the hour had to be used (ptz_pipeline.versions);
    ``r_align_correction_deg``: the correction Δ_p (yaw, pitch, roll degrees) that the R_align version applies
    over the surveyed alignment of this reference scan (ptz_pipeline.proposals), None when it applies none."""

    reference: int | None = None
    intrinsics: int | None = None
    r_align: int | None = None
    note: str | None = None
    r_align_correction_deg: tuple[float, float, float] | None = None

    def columns(self) -> dict[str, int | str | None]:
        """The row's version columns."""
        correction = self.r_align_correction_deg
        return {
            "reference_version": self.reference,
            "intrinsics_version": self.intrinsics,
            "r_align_version": self.r_align,
            "version_note": self.note,
            "r_align_correction": None if correction is None else _CORRECTION_TEXT.format(*correction),
        }


NO_VERSIONS = UsedVersions()


class RowError(ValueError):
    """A result row failed validation; the message names the row and the field."""


class ResultRow(BaseModel):
    """One camera-hour of calibration_results (field order = the Iceberg column order and ids)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: str = Field(min_length=1)
    device_id: str = Field(min_length=1)
    timestamp: AwareDatetime = Field(description="UTC hour of the query")
    pitch_offset: float | None = Field(None, description="degrees; null on failure")
    yaw_offset: float | None = Field(None, description="degrees; null on failure")
    roll_offset: float | None = Field(None, description="degrees; null on failure")
    mode: Literal["active", "passive"] = Field(description="active | passive")
    capture_positions: list[CapturePosition] | None = Field(
        None, description="(pan deg, tilt deg, zoom 0..1) of each query frame"
    )
    files_location: str | None = None
    success: bool
    failure_logs: str | None = None
    sigma_yaw: float | None = Field(None, description="1-sigma, degrees")
    sigma_pitch: float | None = Field(None, description="1-sigma, degrees")
    sigma_roll: float | None = Field(None, description="1-sigma, degrees")
    inliers: int | None = None
    n_frames: int | None = None
    partition_key: str = Field(min_length=1, description="Dagster partition key of the row")
    run_id: str | None = Field(None, description="Dagster run that wrote the row")
    written_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    # Added later, so at the end: Iceberg field ids of the columns above stay, existing tables gain these.
    reference_version: int | None = Field(None, description="reference scan version the estimate used")
    intrinsics_version: int | None = Field(None, description="intrinsics version the estimate used")
    r_align_version: int | None = Field(None, description="R_align version valid at the hour")
    version_note: str | None = Field(
        None, description="set when a calibration version newer than the hour had to be used"
    )
    r_align_correction: str | None = Field(
        None,
        description="the R_align version's correction Δ_p (yaw, pitch, roll degrees): the offsets are "
        "Δ_p⁻¹ · (drift since the reference scan); null when none applied",
    )

    @field_validator(
        "pitch_offset", "yaw_offset", "roll_offset", "sigma_yaw", "sigma_pitch", "sigma_roll", mode="before"
    )
    @classmethod
    def _nan_is_null(cls, value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    @field_validator("capture_positions", mode="before")
    @classmethod
    def _positions(cls, value: Any) -> Any:
        """(pan, tilt, zoom) sequences are accepted beside {pan, tilt, zoom} mappings."""
        if value is None:
            return None
        return [
            dict(zip(("pan", "tilt", "zoom"), p, strict=True))
            if isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 3
            else p
            for p in value
        ]

    @field_validator("timestamp", "written_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def parse(cls, value: ResultRow | Mapping[str, Any], where: str = "row") -> ResultRow:
        """A row from a ResultRow or a mapping of columns; RowError naming ``where`` and the fields."""
        if isinstance(value, ResultRow):
            return value
        try:
            return cls.model_validate(dict(value))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
            )
            raise RowError(f"{where} (partition_key={value.get('partition_key')!r}): {problems}") from None

    @classmethod
    def from_estimate(
        cls,
        cam: CameraConfig,
        hour: datetime,
        partition_key: str,
        run_id: str | None,
        estimate: DriftEstimate,
        capture_positions: list[dict] | None,
        files_location: str | None,
        versions: UsedVersions = NO_VERSIONS,
    ) -> ResultRow:
        """The row of a camera-hour's drift estimate (offsets null when it failed)."""
        return cls(
            deployment=cam.deployment,
            device_id=cam.name,
            timestamp=hour,
            yaw_offset=estimate.yaw_deg,
            pitch_offset=estimate.pitch_deg,
            roll_offset=estimate.roll_deg,
            sigma_yaw=estimate.sigma_yaw_deg,
            sigma_pitch=estimate.sigma_pitch_deg,
            sigma_roll=estimate.sigma_roll_deg,
            inliers=int(estimate.inliers),
            n_frames=int(estimate.n_query_frames),
            mode=cam.mode,
            capture_positions=capture_positions,
            files_location=files_location,
            success=bool(estimate.success),
            failure_logs=estimate.reason or None,
            partition_key=partition_key,
            run_id=run_id,
            **versions.columns(),
        )

    @classmethod
    def failure(
        cls,
        cam: CameraConfig,
        hour: datetime,
        partition_key: str,
        run_id: str | None,
        reason: str,
        files_location: str | None = None,
        versions: UsedVersions = NO_VERSIONS,
    ) -> ResultRow:
        """A success=false row: no offsets, the reason in failure_logs."""
        return cls(
            deployment=cam.deployment,
            device_id=cam.name,
            timestamp=hour,
            mode=cam.mode,
            capture_positions=[],
            files_location=files_location,
            success=False,
            failure_logs=reason,
            partition_key=partition_key,
            run_id=run_id,
            **versions.columns(),
        )

    def within_threshold(self, threshold_deg: float) -> bool:
        """True when the row succeeded and every |offset| is at most ``threshold_deg`` (degrees)."""
        return within_threshold(
            self.pitch_offset, self.yaw_offset, self.roll_offset, self.success, threshold_deg
        )

    def metadata(self) -> dict[str, float | int | str | None]:
        """Values for the UI (numbers are plotted per partition): degrees, σ degrees, counts, the calibration
        versions used (the note when one was newer than the hour, the R_align correction taken out)."""
        return {
            "yaw_deg": self.yaw_offset,
            "pitch_deg": self.pitch_offset,
            "roll_deg": self.roll_offset,
            "sigma_yaw_deg": self.sigma_yaw,
            "sigma_pitch_deg": self.sigma_pitch,
            "sigma_roll_deg": self.sigma_roll,
            "inliers": self.inliers,
            "frames": self.n_frames,
            "reference_version": self.reference_version,
            "intrinsics_version": self.intrinsics_version,
            "r_align_version": self.r_align_version,
            **({"version_note": self.version_note} if self.version_note else {}),
            **({"r_align_correction": self.r_align_correction} if self.r_align_correction else {}),
        }

    def record(self) -> dict[str, Any]:
        """The row as plain column values (positions as dicts), for Arrow and Iceberg."""
        return self.model_dump()


COLUMNS: tuple[str, ...] = tuple(ResultRow.model_fields)
"""Every column of calibration_results, in order."""
REPORT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in ("capture_positions", "written_at"))
"""Columns of the daily Excel/Parquet report."""
