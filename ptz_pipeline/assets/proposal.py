"""r_align_proposal (camera): a corrected R_align when the drift has stayed at one Δ for N hours
(geometry.proposal), stored with its evidence for a person to apply (``r_align`` with ``apply_proposal``).

Only hours estimated against the camera's CURRENT R_align and reference scan versions count: their offsets
are reported relative to that R_align (ptz_pipeline.proposals), so a proposal is made on top of it, and
after one is applied the new version starts with no history (no second proposal for the same step).

A proposal that appears is announced on Slack once (camera, Δ ± σ, hours of evidence, how to apply it):
the same proposal re-made by later runs (same versions, Δ̄ within ``proposals.SAME_PROPOSAL_Z`` σ) is not
announced again; a failed delivery is retried by the next run.
"""

from datetime import UTC, datetime, timedelta
from typing import Literal

import dagster as dg
import pandas as pd

from geometry.proposal import ProposalConfig, propose_r_align
from geometry.trend import TrendConfig
from ptz_pipeline import proposals
from ptz_pipeline.assets.common import current_version, read_r_align
from ptz_pipeline.assets.drift import offset_history
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.assets.r_align import r_align
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.grouped import GroupedOutcome, grouped_asset
from ptz_pipeline.partitions import CAMERA_DIM, camera_partitions
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import Delivery, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.versions import Version

R_ALIGN_PROPOSAL = dg.AssetKey("r_align_proposal")


class RAlignProposalConfig(dg.Config):
    """How steady the drift must be before a proposal (geometry.proposal.ProposalConfig; hours)."""

    hours: int = ProposalConfig.hours
    """N: consecutive valid hours showing the same drift (within σ)."""
    window_hours: float = ProposalConfig.trend_hours
    """History read and judged (its trend: stable, step, creep, oscillation), back from the latest hour."""
    min_history_hours: float = ProposalConfig.min_trend_hours
    """Fewest hours from the first to the last valid hour of that history (48: a daily oscillation shows)."""
    min_valid_hours: int = TrendConfig.min_samples
    """Fewest valid hours per angle for the trend to be judged at all."""

    def proposal_config(self) -> ProposalConfig:
        return ProposalConfig(
            hours=self.hours,
            trend_hours=self.window_hours,
            min_trend_hours=self.min_history_hours,
            trend=TrendConfig(min_samples=self.min_valid_hours),
        )


def rows_of_versions(rows: pd.DataFrame, r_align_version: Version, reference: Version) -> pd.DataFrame:
    """The calibration_results rows estimated against these R_align and reference versions, and failed rows
    of hours that began after both became valid (a camera that stops answering never looks settled)."""
    same = (rows["r_align_version"] == r_align_version.number) & (
        rows["reference_version"] == reference.number
    )
    starts = [v.valid_from for v in (r_align_version, reference) if v.valid_from is not None]
    later = pd.to_datetime(rows["timestamp"], utc=True) >= max(starts) if starts else True
    return rows[same | (~rows["success"].astype(bool) & later)]


def _propose(
    cam: CameraConfig,
    config: RAlignProposalConfig,
    storage: ObjectStorageResource,
    iceberg: IcebergResource,
    now: datetime,
    run_id: str,
) -> proposals.ProposalRecord:
    """One camera's proposal from its rows of the last ``window_hours``, stored as ``proposal.json``."""
    version = current_version(storage, cam, "r_align")
    reference = current_version(storage, cam, "reference")
    rows = iceberg.read_rows(
        cam.deployment, cam.name, now - timedelta(hours=config.window_hours), now + timedelta(hours=1)
    )
    _, history = offset_history(rows_of_versions(rows, version, reference))
    settings = config.proposal_config()
    R_align = read_r_align(storage, cam, version)
    proposal = propose_r_align(R_align, history, settings)
    base = proposals.correction_of(version, reference.number) or proposals.Correction(
        reference_version=reference.number, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0
    )
    record = proposals.ProposalRecord(
        camera=cam.key,
        created=now,
        run_id=run_id,
        proposed=proposal.proposed,
        reason=proposal.reason,
        r_align_version=version.number,
        reference_version=reference.number,
        trend=proposal.trend.trend,
        hours_used=[proposals.hour_of(h) for h in proposal.hours_used],
        delta_deg=proposals.finite_angles(proposal.delta_deg),
        delta_sigma_deg=proposals.finite_angles(proposal.delta_sigma_deg),
        spread_deg=proposals.finite(proposal.spread_deg),
        R_align=proposal.R_align.tolist() if proposal.proposed else None,
        correction=base.then(proposal.delta) if proposal.proposed else None,
        settings={
            "hours": settings.hours,
            "window_hours": settings.trend_hours,
            "min_history_hours": settings.min_trend_hours,
            "min_valid_hours": settings.trend.min_samples,
        },
    )
    storage.put_bytes(
        proposals.proposal_key(cam.deployment, cam.name), record.model_dump_json(indent=2).encode()
    )
    return record


def announce(
    storage: ObjectStorageResource, slack: SlackResource, cam: CameraConfig, record: proposals.ProposalRecord
) -> Delivery | Literal["announced before"] | None:
    """Announce a made proposal on Slack unless the same one was announced before (None: nothing proposed);
    a delivery that did not fail is recorded in ``proposal_announced.json``."""
    if not record.proposed:
        return None
    previous = proposals.read_announcement(storage, cam.deployment, cam.name)
    if previous is not None and proposals.same_proposal(previous.proposal, record):
        return "announced before"
    delivery = slack.send_message(proposals.proposal_message(record))
    if delivery != "failed":
        announcement = proposals.Announcement(announced=record.created, delivery=delivery, proposal=record)
        storage.put_bytes(
            proposals.announcement_key(cam.deployment, cam.name),
            announcement.model_dump_json(indent=2).encode(),
        )
    return delivery


def _metadata(record: proposals.ProposalRecord, location: str) -> dict[str, object]:
    """The UI's view of a proposal: yes/no, why, Δ̄ ± σ (degrees), the evidence and how to apply it."""
    metadata: dict[str, object] = {
        "proposed": record.proposed,
        "reason": record.reason,
        "trend": record.trend,
        "hours_used": len(record.hours_used),
        "r_align_version": record.r_align_version,
        "reference_version": record.reference_version,
        "proposal": dg.MetadataValue.path(location),
    }
    if record.delta_deg is not None and record.delta_sigma_deg is not None:
        for k, name in enumerate(("yaw", "pitch", "roll")):
            metadata[f"delta_{name}_deg"] = round(record.delta_deg[k], 5)
            metadata[f"sigma_{name}_deg"] = round(record.delta_sigma_deg[k], 5)
        metadata["spread_deg"] = record.spread_deg
    if record.proposed:
        metadata["R_align_proposed"] = dg.MetadataValue.json(record.R_align)
        metadata["apply"] = proposals.apply_instructions(record.camera)
    return metadata


@grouped_asset(
    R_ALIGN_PROPOSAL,
    camera_partitions,
    [
        dg.AssetDep(
            ORIENTATION_OFFSETS,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=CAMERA_DIM),
        ),
        dg.AssetDep(r_align),
    ],
    "A corrected R_align = R_align · Δ̄ when the drift stayed at Δ̄ (degrees) for N hours, with its evidence; "
    "never applied by itself (r_align with apply_proposal applies it).",
    group_name="reports",
    kinds={"iceberg", "python"},
)
def r_align_proposal(
    context: dg.AssetExecutionContext,
    config: RAlignProposalConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    iceberg: IcebergResource,
    slack: SlackResource,
):
    """Per camera: propose (or say why not) a corrected R_align from the hours estimated against the current
    R_align and reference versions, announcing a new proposal on Slack; refreshed after each hour's estimates
    (sensor drift_after_estimate)."""
    fleet = devices.fleet()
    now = datetime.now(UTC)
    outcome = GroupedOutcome.empty()
    for key in context.partition_keys:
        try:
            cam = fleet.camera(key)
            record = _propose(cam, config, storage, iceberg, now, context.run.run_id)
            slack_delivery = announce(storage, slack, cam, record)
        except Exception as exc:  # one camera's failure never hides the others' proposals
            outcome.failed[key] = f"{type(exc).__name__}: {exc}"
            continue
        verdict = "proposed" if record.proposed else "no proposal"
        context.log.info(f"{key}: {verdict}: {record.reason}")
        location = storage.uri(proposals.proposal_key(cam.deployment, cam.name))
        outcome.succeeded[key] = _metadata(record, location)
        if slack_delivery is not None:
            outcome.succeeded[key]["slack"] = slack_delivery
    yield from outcome.report(R_ALIGN_PROPOSAL)
