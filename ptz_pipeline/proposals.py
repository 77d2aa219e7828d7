"""R_align proposals in storage: the record ``r_align_proposal`` writes and ``r_align`` applies, and the
correction an applied proposal leaves in the R_align version it creates.

Frames and conventions (ARCHITECTURE.md): an hour's offsets Δ are the mount's rotation since the reference
scan; the true ``R_WB = R_align · Δ``. An R_align version made by applying a proposal is
``R_align = R_align(surveyed) · Δ_p``: its provenance holds the correction Δ_p (:class:`Correction`) and the
reference scan version Δ_p was measured against. An hour estimated against that reference is reported
relative to that R_align, as ``Δ_p⁻¹ · Δ`` (ptz_pipeline.assets.offsets); any other hour (a survey-based
version, or a reference re-scanned since, which captured the mount where it then was) as Δ itself.

Layout: ``{deployment}/{camera}/r_align/proposal.json`` (the latest proposal, refused ones included: the
reason is the evidence); an applied proposal is copied into the version folder it made;
``r_align/proposal_announced.json`` (:class:`Announcement`): the last proposal announced on Slack, so each
proposal is announced once (:func:`same_proposal`), however often r_align_proposal re-proposes it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from geometry.proposal import ProposalConfig
from geometry.rotations import drift_angles, drift_matrix
from ptz_pipeline import scans, versions
from ptz_pipeline.results import ANGLES

Angles = tuple[float, float, float]
"""(yaw, pitch, roll) in degrees (geometry.rotations.drift_matrix)."""


class Correction(BaseModel):
    """Δ_p = drift_matrix(yaw, pitch, roll) (degrees) that an R_align version applies on top of the surveyed
    alignment of reference scan version ``reference_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_version: int
    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    @property
    def angles_deg(self) -> Angles:
        return (self.yaw_deg, self.pitch_deg, self.roll_deg)

    def then(self, delta: np.ndarray) -> Correction:
        """The correction ``Δ_p · delta`` (3x3 rotation applied on top of this one), same reference."""
        yaw, pitch, roll = drift_angles(drift_matrix(*self.angles_deg) @ delta)
        return Correction(
            reference_version=self.reference_version, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll
        )


def correction_of(version: versions.Version, reference_version: int) -> Correction | None:
    """The correction of an R_align ``version`` for hours estimated against ``reference_version``: None for a
    survey-based version, or when the correction was measured against another reference scan version."""
    stored = version.provenance.get("correction")
    if stored is None:
        return None
    correction = Correction.model_validate(stored)
    return correction if correction.reference_version == reference_version else None


class ProposalRecord(BaseModel):
    """The latest proposal for one camera (``proposal.json``): proposed or not, why, and the evidence.

    ``delta_deg``: Δ̄ (yaw, pitch, roll degrees), the mean drift over ``hours_used`` (UTC hour starts) as
    reported against R_align ``r_align_version`` and reference ``reference_version``; ``delta_sigma_deg``
    its 1-σ; ``spread_deg``: the largest angle between one hour's drift and Δ̄. ``R_align``: the proposed
    3x3 (mount -> world ENU), ``R_align(r_align_version) · Δ̄``; ``correction``: the Δ_p the new version
    would carry. Numbers that were never computed (a refusal before them) are None.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: str
    created: AwareDatetime
    run_id: str
    proposed: bool
    reason: str
    r_align_version: int
    reference_version: int
    trend: str
    hours_used: list[AwareDatetime]
    delta_deg: Angles | None
    delta_sigma_deg: Angles | None
    spread_deg: float | None
    R_align: list[list[float]] | None
    correction: Correction | None
    settings: dict[str, float]
    """The geometry.proposal.ProposalConfig values used (hours, degrees)."""


def finite(value: float) -> float | None:
    """``value`` as a float, or None when it is not finite (a number the proposal never computed)."""
    return float(value) if math.isfinite(value) else None


def finite_angles(values: tuple[float, float, float]) -> Angles | None:
    """Three angles as floats, or None when any is not finite."""
    return (float(values[0]), float(values[1]), float(values[2])) if all(map(math.isfinite, values)) else None


SAME_PROPOSAL_Z = ProposalConfig.consistency_z
"""Two proposals on the same R_align and reference versions whose Δ̄ differ by at most this many combined σ in
every angle are the same proposal (announced once)."""


class Announcement(BaseModel):
    """The last proposal announced for one camera (``proposal_announced.json``), when and how it went out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    announced: AwareDatetime
    delivery: str
    """SlackResource's delivery: slack, webhook or log (a failed delivery is not recorded: it is retried)."""
    proposal: ProposalRecord


def same_proposal(a: ProposalRecord, b: ProposalRecord, z: float = SAME_PROPOSAL_Z) -> bool:
    """Whether two made proposals propose the same correction: same camera, R_align and reference versions,
    and every angle of Δ̄ within ``z`` combined σ (degrees) of the other's."""
    if not (a.proposed and b.proposed) or (a.camera, a.r_align_version, a.reference_version) != (
        b.camera,
        b.r_align_version,
        b.reference_version,
    ):
        return False
    if a.delta_deg is None or b.delta_deg is None or a.delta_sigma_deg is None or b.delta_sigma_deg is None:
        return False
    return all(
        abs(da - db) <= z * math.hypot(sa, sb)
        for da, db, sa, sb in zip(a.delta_deg, b.delta_deg, a.delta_sigma_deg, b.delta_sigma_deg, strict=True)
    )


def apply_instructions(camera_key: str) -> str:
    """How a person applies a camera's proposal: the asset, its partition and the run config."""
    return (
        f"materialize r_align for {camera_key} (e.g. in the calibrate_camera job, r_align only) with run "
        "config ops: {r_align: {config: {apply_proposal: true}}}"
    )


def proposal_message(record: ProposalRecord) -> str:
    """The Slack text announcing a made proposal: camera, Δ yaw/pitch/roll ± σ (degrees), the hours of
    evidence, the versions it corrects and how to apply it."""
    if not record.proposed or record.delta_deg is None or record.delta_sigma_deg is None:
        raise ValueError(f"{record.camera}: no proposal to announce ({record.reason})")
    angles = ", ".join(
        f"{name} {value:+.4f}° ± {sigma:.4f}°"
        for name, value, sigma in zip(ANGLES, record.delta_deg, record.delta_sigma_deg, strict=True)
    )
    first, last = min(record.hours_used), max(record.hours_used)
    spread = "" if record.spread_deg is None else f", largest hour-to-mean angle {record.spread_deg:.4f}°"
    return "\n".join(
        [
            f"\N{TRIANGULAR RULER} R_align proposal for {record.camera}",
            f"Drift settled at Δ: {angles}",
            f"Evidence: {len(record.hours_used)} hours from {first.astimezone(UTC):%Y-%m-%dT%H:%MZ} to "
            f"{last.astimezone(UTC):%Y-%m-%dT%H:%MZ}{spread}; trend {record.trend}",
            f"Corrects R_align v{record.r_align_version} (reference scan v{record.reference_version})",
            f"To apply: {apply_instructions(record.camera)}",
        ]
    )


def announcement_key(deployment: str, camera: str) -> str:
    """Where the camera's last announced proposal is recorded."""
    return f"{versions.artefact_prefix(deployment, camera, 'r_align')}/proposal_announced.json"


def read_announcement(storage: scans.Storage, deployment: str, camera: str) -> Announcement | None:
    """The camera's last announced proposal; None when there is none or its record is unreadable (then the
    next proposal is announced again rather than never)."""
    key = announcement_key(deployment, camera)
    if not storage.exists(key):
        return None
    try:
        return Announcement.model_validate_json(storage.get_bytes(key))
    except ValidationError:
        return None


def proposal_key(deployment: str, camera: str) -> str:
    """Where the camera's latest proposal is stored."""
    return f"{versions.artefact_prefix(deployment, camera, 'r_align')}/proposal.json"


def hour_of(hours_since_epoch: float) -> datetime:
    """The UTC datetime of an hour on OffsetHistory's axis (hours since the Unix epoch)."""
    return datetime.fromtimestamp(round(hours_since_epoch * 3600.0), UTC)


def read_proposal(storage: scans.Storage, deployment: str, camera: str) -> tuple[bytes, ProposalRecord]:
    """(bytes, parsed) of the camera's latest proposal; FileNotFoundError or ValueError naming the file."""
    key = proposal_key(deployment, camera)
    if not storage.exists(key):
        raise FileNotFoundError(
            f"no R_align proposal at {storage.uri(key)}; materialize r_align_proposal first"
        )
    data = storage.get_bytes(key)
    try:
        return data, ProposalRecord.model_validate_json(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise ValueError(f"{storage.uri(key)}: {where}: {error['msg']}") from None
