"""Slack calibration reports (the seed's message format): bot token, incoming webhook, or the log.

Configuration follows the seed: ``SLACK_ACCESS_TOKEN`` (``chat.postMessage``, needs ``chat:write``),
``SLACK_CHANNEL`` (default ``calibration-monitoring``), ``SLACK_WEBHOOK_URL``. With neither token nor webhook
(None or empty) the message is logged. Pass ``dg.EnvVar(...)`` only for variables that are set: Dagster fails
a run's config on an EnvVar whose variable is unset. Sending never raises into the asset: Slack errors are
logged and reported as "failed".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from pydantic import Field
from slack_sdk import WebClient, WebhookClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from ptz_pipeline.results import DEFAULT_THRESHOLD_DEG, ResultRow, within_threshold

Delivery = Literal["slack", "webhook", "log", "failed", "unchanged", "not an alert"]
"""How a message went out: chat.postMessage, incoming webhook, the log only, a Slack error (logged), or not at
all because the camera-hour's report is unchanged since it was last sent, or because it is within the
threshold and the deployment reports alerts only."""

Report = Literal["all", "alerts"]
"""A deployment's Slack reports (devices.yaml ``report``): every camera-hour's result (the seed's behaviour),
or only alerts (failures and offsets beyond the camera's threshold)."""

DEFAULT_CHANNEL = "calibration-monitoring"
OK_EMOJI = "\N{WHITE HEAVY CHECK MARK}"
ALERT_EMOJI = "\N{POLICE CARS REVOLVING LIGHT}"

# slack_sdk logs request URLs and bodies at DEBUG; a webhook URL is a secret, so its clients log at INFO+.
_SDK_LOGGER = logging.getLogger("ptz_pipeline.resources.slack.sdk")
_SDK_LOGGER.setLevel(logging.INFO)


def _format_degrees(value: float | None) -> str:
    """``0.2°`` style: at most 3 decimals, trailing zeros dropped; ``N/A`` when there is no estimate."""
    if value is None:
        return "N/A"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{'0' if text == '-0' else text}°"


def format_calibration_report(
    deployment: str,
    device_id: str,
    timestamp: datetime,
    pitch: float | None,
    yaw: float | None,
    roll: float | None,
    mode: str,
    success: bool,
    failure_logs: str | Sequence[str] | None = None,
    threshold_deg: float = DEFAULT_THRESHOLD_DEG,
) -> str:
    """The seed's Slack message for one camera-hour; offsets in degrees, ``timestamp`` timezone-aware.

    The first line is ✅ when the run succeeded and every |offset| <= threshold_deg, else 🚨.
    Failure logs are listed after ``Success: No``.
    """
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware, got {timestamp!r}")
    within = within_threshold(pitch, yaw, roll, success, threshold_deg)
    lines = [
        f"{OK_EMOJI if within else ALERT_EMOJI} Camera Calibration Report",
        f"Deployment: {deployment}",
        f"Device: {device_id}",
        f"Timestamp: {timestamp.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
        f"Offsets: Pitch={_format_degrees(pitch)}, Yaw={_format_degrees(yaw)}, Roll={_format_degrees(roll)}",
        f"Mode: {mode}",
        f"Success: {'Yes' if success else 'No'}",
    ]
    if not success and failure_logs:
        logs = [failure_logs] if isinstance(failure_logs, str) else list(failure_logs)
        lines += ["Failure Logs:", *(f"- {line}" for line in logs)]
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Escape Slack's control characters (&, <, >) so failure logs are shown verbatim."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _resolved(value: str | None) -> str | None:
    """An EnvVar's value when the resource is used outside a Dagster run; empty means unset."""
    if isinstance(value, dg.EnvVar):
        value = value.get_value()
    return value or None


class SlackResource(dg.ConfigurableResource):
    """Posts calibration reports to Slack: bot token first, else webhook, else the log."""

    access_token: str | None = Field(default=None, description="Bot token (xoxb-...), chat:write scope.")
    channel: str = Field(default=DEFAULT_CHANNEL, description="Channel for chat.postMessage.")
    webhook_url: str | None = Field(default=None, description="Incoming webhook URL (used without a token).")
    base_url: str | None = Field(default=None, description="Slack API base URL override (tests, proxies).")
    threshold_deg: float = Field(
        default=DEFAULT_THRESHOLD_DEG, gt=0.0, description="|offset| above this (degrees) alerts."
    )

    def _redact(self, text: str) -> str:
        """``text`` with the token and the webhook URL replaced by ``***``."""
        for secret in (_resolved(self.access_token), _resolved(self.webhook_url)):
            if secret:
                text = text.replace(secret, "***")
        return text

    def send_message(self, text: str) -> Delivery:
        """Send ``text`` via chat.postMessage (token) or the webhook, else log it. Never raises."""
        log = dg.get_dagster_logger("ptz_pipeline.slack")
        token, webhook_url = _resolved(self.access_token), _resolved(self.webhook_url)
        if not token and not webhook_url:
            log.info("Slack is not configured (no access token or webhook URL); message:\n%s", text)
            return "log"
        delivery: Delivery = "slack" if token else "webhook"
        try:
            if token:
                client = WebClient(
                    token=token, base_url=self.base_url or WebClient.BASE_URL, logger=_SDK_LOGGER
                )
                client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
                client.chat_postMessage(channel=self.channel, text=_escape(text))
            else:
                webhook = WebhookClient(webhook_url, logger=_SDK_LOGGER)
                webhook.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
                response = webhook.send(text=_escape(text))
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered HTTP {response.status_code}: {response.body}")
        except Exception as exc:  # a notification must never fail the asset that sends it
            log.warning("Slack %s delivery failed: %s\nmessage:\n%s", delivery, self._redact(str(exc)), text)
            return "failed"
        log.info("Slack report sent (%s%s)", delivery, f" to #{self.channel}" if token else "")
        return delivery

    def send_calibration_report(
        self,
        deployment: str,
        device_id: str,
        timestamp: datetime,
        pitch: float | None,
        yaw: float | None,
        roll: float | None,
        mode: str,
        success: bool,
        failure_logs: str | Sequence[str] | None = None,
        threshold_deg: float | None = None,
    ) -> Delivery:
        """Format (:func:`format_calibration_report`) and send one report.

        ``threshold_deg`` (degrees) overrides the resource's, e.g. with the camera's ``offset_threshold_deg``.
        """
        text = format_calibration_report(
            deployment,
            device_id,
            timestamp,
            pitch,
            yaw,
            roll,
            mode,
            success,
            failure_logs,
            self.threshold_deg if threshold_deg is None else threshold_deg,
        )
        return self.send_message(text)

    def send_result(
        self,
        row: ResultRow,
        threshold_deg: float,
        previous: ResultRow | None = None,
        report: Report = "all",
    ) -> Delivery:
        """The seed's report for one calibration_results row, judged against the camera's threshold
        (degrees), as the deployment's ``report`` setting says: ``all`` sends every result, ``alerts`` only a
        failure or an offset beyond the threshold ("not an alert" otherwise).

        ``previous`` is the row it replaces: when that row's report reads the same (a re-run or backfill of
        an hour already reported), nothing is sent again ("unchanged").
        """
        log = dg.get_dagster_logger("ptz_pipeline.slack")
        if report == "alerts" and row.within_threshold(threshold_deg):
            log.info(
                "%s: within %s° and the deployment reports alerts only: not sent",
                row.partition_key,
                threshold_deg,
            )
            return "not an alert"
        text = _row_report(row, threshold_deg)
        if previous is not None and _row_report(previous, threshold_deg) == text:
            log.info("%s: report unchanged since it was sent, not re-sent", row.partition_key)
            return "unchanged"
        return self.send_message(text)


def _row_report(row: ResultRow, threshold_deg: float) -> str:
    """The seed's report text for one calibration_results row."""
    return format_calibration_report(
        deployment=row.deployment,
        device_id=row.device_id,
        timestamp=row.timestamp,
        pitch=row.pitch_offset,
        yaw=row.yaw_offset,
        roll=row.roll_offset,
        mode=row.mode,
        success=row.success,
        failure_logs=[row.failure_logs] if row.failure_logs else None,
        threshold_deg=threshold_deg,
    )
