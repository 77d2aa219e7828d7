"""The seed's Slack API: ``SlackNotifier`` finds SLACK_ACCESS_TOKEN / SLACK_WEBHOOK_URL (and SLACK_CHANNEL) in
the environment and sends the seed's calibration report; the pipeline's SlackResource does the sending."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ptz_pipeline.resources.slack import Delivery, SlackResource


class SlackNotifier:
    """``SlackNotifier().send_calibration_report(...)`` as in the original system; offsets in degrees.

    Without a token or webhook in the environment, messages go to the log. ``slack`` overrides the resource
    (tests, another workspace).
    """

    def __init__(self, slack: SlackResource | None = None) -> None:
        if slack is None:
            from ptz_pipeline.settings import slack_resource

            slack = slack_resource()
        self.slack = slack

    def send_calibration_report(
        self,
        deployment: str,
        device_id: str,
        pitch: float | None,
        yaw: float | None,
        roll: float | None,
        mode: str,
        success: bool,
        failure_logs: str | Sequence[str] | None = None,
        timestamp: datetime | None = None,
    ) -> Delivery:
        """Send one camera's report (the seed's argument order); ``timestamp`` defaults to now (UTC)."""
        return self.slack.send_calibration_report(
            deployment,
            device_id,
            timestamp or datetime.now(UTC),
            pitch,
            yaw,
            roll,
            mode,
            success,
            failure_logs,
        )
