"""SlackResource: the seed's message format, delivery to a local Slack imitation (real HTTP), log fallback."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from ptz_pipeline.resources.slack import SlackResource, format_calibration_report
from ptz_pipeline.results import ResultRow, within_threshold
from ptz_pipeline_tests.test_iceberg import row

if TYPE_CHECKING:
    from ptz_pipeline_tests.servers import SlackServer

pytest_plugins = ["ptz_pipeline_tests.servers"]

HOUR = datetime(2025, 11, 15, 21, tzinfo=UTC)
CAMERA = "gan-shomron-dell__onvifcam-1"
SEED_EXAMPLE = (
    "\u2705 Camera Calibration Report\n"
    "Deployment: gan-shomron-dell\n"
    "Device: onvifcam-1\n"
    "Timestamp: 2025-11-15T21:00:00Z\n"
    "Offsets: Pitch=0.2\u00b0, Yaw=0.3\u00b0, Roll=0.1\u00b0\n"
    "Mode: passive\n"
    "Success: Yes"
)


def seed_report(**changes: object) -> dict:
    """Arguments of the seed README's example report, with ``changes``."""
    return {
        "deployment": "gan-shomron-dell",
        "device_id": "onvifcam-1",
        "timestamp": HOUR,
        "pitch": 0.2,
        "yaw": 0.3,
        "roll": 0.1,
        "mode": "passive",
        "success": True,
    } | changes


def test_format_matches_the_seed_example() -> None:
    assert format_calibration_report(**seed_report()) == SEED_EXAMPLE


def test_format_converts_the_timestamp_to_utc_z() -> None:
    israel_winter = timezone(timedelta(hours=2))
    text = format_calibration_report(
        **seed_report(timestamp=datetime(2025, 11, 15, 23, tzinfo=israel_winter))
    )
    assert "\nTimestamp: 2025-11-15T21:00:00Z\n" in text
    with pytest.raises(ValueError, match="timezone-aware"):
        format_calibration_report(**seed_report(timestamp=datetime(2025, 11, 15, 21)))


@pytest.mark.parametrize(
    ("changes", "emoji"),
    [
        ({"pitch": 0.5, "yaw": -0.5, "roll": 0.5}, "\u2705"),  # the threshold itself is within
        ({"yaw": 0.51}, "\U0001f6a8"),
        ({"roll": -0.6}, "\U0001f6a8"),
        ({"success": False}, "\U0001f6a8"),
        ({"pitch": None, "yaw": None, "roll": None, "success": False}, "\U0001f6a8"),
    ],
)
def test_alert_emoji(changes: dict, emoji: str) -> None:
    assert format_calibration_report(**seed_report(**changes)).split(" ", 1)[0] == emoji


@pytest.mark.parametrize(
    ("offsets", "success", "expected"),
    [((0.5, -0.5, 0.0), True, True), ((0.2, 0.6, 0.0), True, False), ((0.0, 0.0, None), True, False)],
)
def test_offsets_within_threshold(offsets: tuple, success: bool, expected: bool) -> None:
    assert within_threshold(*offsets, success=success, threshold_deg=0.5) is expected
    assert within_threshold(*offsets, success=False, threshold_deg=0.5) is False


def test_threshold_is_configurable() -> None:
    report = seed_report(yaw=0.8)
    assert format_calibration_report(**report, threshold_deg=1.0).startswith("\u2705")
    assert format_calibration_report(**report, threshold_deg=0.5).startswith("\U0001f6a8")


def test_failed_report_lists_logs_and_no_offsets() -> None:
    text = format_calibration_report(
        **seed_report(pitch=None, yaw=None, roll=None, success=False),
        failure_logs=["camera unreachable", "retry failed"],
    )
    assert text.splitlines()[4:] == [
        "Offsets: Pitch=N/A, Yaw=N/A, Roll=N/A",
        "Mode: passive",
        "Success: No",
        "Failure Logs:",
        "- camera unreachable",
        "- retry failed",
    ]


def test_degrees_are_rounded_to_three_decimals() -> None:
    text = format_calibration_report(**seed_report(pitch=0.123456, yaw=-12.0, roll=-0.0001))
    assert "Offsets: Pitch=0.123\u00b0, Yaw=-12\u00b0, Roll=0\u00b0" in text


@pytest.mark.integration
def test_token_posts_to_chat_post_message(slack_server: SlackServer) -> None:
    slack = SlackResource(access_token=slack_server.token, channel="calib", base_url=slack_server.base_url)
    assert slack.send_calibration_report(**seed_report()) == "slack"
    [request] = slack_server.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["Authorization"] == f"Bearer {slack_server.token}"
    assert request.body == {"channel": "calib", "text": SEED_EXAMPLE}


@pytest.mark.integration
def test_per_camera_threshold_overrides_the_resource(slack_server: SlackServer) -> None:
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url, threshold_deg=0.5)
    slack.send_calibration_report(**seed_report(), threshold_deg=0.25)  # yaw 0.3 exceeds this camera's 0.25
    slack.send_calibration_report(**seed_report())
    assert [r.body["text"][0] for r in slack_server.requests] == ["\U0001f6a8", "\u2705"]


@pytest.mark.integration
def test_text_is_escaped_for_slack(slack_server: SlackServer) -> None:
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    slack.send_message("error: <urlopen error [Errno 111]> & more")
    assert slack_server.requests[0].body["text"] == "error: &lt;urlopen error [Errno 111]&gt; &amp; more"
    assert slack_server.requests[0].body["channel"] == "calibration-monitoring"


@pytest.mark.integration
def test_webhook_is_used_without_a_token(slack_server: SlackServer) -> None:
    slack = SlackResource(webhook_url=slack_server.webhook_url)
    assert slack.send_calibration_report(**seed_report(yaw=0.9)) == "webhook"
    [request] = slack_server.requests
    assert slack_server.webhook_url.endswith(request.path)
    assert request.body == {
        "text": SEED_EXAMPLE.replace("\u2705", "\U0001f6a8").replace("Yaw=0.3", "Yaw=0.9")
    }
    assert "Authorization" not in request.headers


def test_unconfigured_falls_back_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert (
            SlackResource(access_token="", webhook_url=None).send_calibration_report(**seed_report()) == "log"
        )
    assert SEED_EXAMPLE in caplog.text


@pytest.mark.integration
def test_api_error_is_logged_not_raised_and_token_not_logged(
    slack_server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    slack = SlackResource(access_token=slack_server.token, channel="missing", base_url=slack_server.base_url)
    with caplog.at_level(logging.DEBUG):
        assert slack.send_calibration_report(**seed_report()) == "failed"
    assert "channel_not_found" in caplog.text
    assert SEED_EXAMPLE in caplog.text  # the report is not lost
    assert slack_server.token not in caplog.text


@pytest.mark.integration
def test_bad_token_and_bad_webhook_fail_without_leaking(
    slack_server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    bad_token = "xoxb-wrong-secret-token"
    bad_webhook = slack_server.webhook_url + "-revoked-secret"
    with caplog.at_level(logging.DEBUG):
        assert (
            SlackResource(access_token=bad_token, base_url=slack_server.base_url).send_message("x")
            == "failed"
        )
        assert SlackResource(webhook_url=bad_webhook).send_message("x") == "failed"
    assert "not_authed" in caplog.text
    assert "HTTP 404" in caplog.text
    assert bad_token not in caplog.text
    assert "revoked-secret" not in caplog.text


@pytest.mark.integration
def test_unreachable_slack_is_a_failure_not_an_exception(unreachable_url: str) -> None:
    slack = SlackResource(access_token="xoxb-any", base_url=f"{unreachable_url}/api/")
    assert slack.send_message("hello") == "failed"
    assert SlackResource(webhook_url=f"{unreachable_url}/services/x").send_message("hello") == "failed"


@pytest.mark.integration
def test_env_var_token_in_a_run_and_outside(
    slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Definitions pass dg.EnvVar for a set token (resolved in the run, a name in the UI), else None."""
    monkeypatch.setenv("PTZ_TEST_SLACK_TOKEN", slack_server.token)
    deliveries: list[str] = []

    @dg.asset
    def report(slack: SlackResource) -> None:
        deliveries.append(slack.send_calibration_report(**seed_report()))

    with_token = SlackResource(access_token=dg.EnvVar("PTZ_TEST_SLACK_TOKEN"), base_url=slack_server.base_url)
    assert dg.materialize([report], resources={"slack": with_token}).success
    assert dg.materialize([report], resources={"slack": SlackResource(access_token=None)}).success
    assert with_token.send_message("direct use, outside a run") == "slack"  # EnvVar resolved here too
    assert deliveries == ["slack", "log"]
    assert [r.headers["Authorization"] for r in slack_server.requests] == [f"Bearer {slack_server.token}"] * 2


@pytest.mark.integration
def test_report_all_sends_every_result_alerts_only_failures_and_breaches(slack_server: SlackServer) -> None:
    """devices.yaml ``report: all`` (the seed) posts every camera-hour's report, ✅ included; ``alerts`` posts
    only 🚨 (an offset beyond the threshold, a failure); either way an unchanged report is not re-sent."""
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    ok, breach = ResultRow.parse(row(CAMERA, HOUR, yaw=0.3)), ResultRow.parse(row(CAMERA, HOUR, yaw=0.61))
    failed = ResultRow.parse(row(CAMERA, HOUR, yaw=None))
    deliveries = {
        report: [slack.send_result(r, 0.5, None, report) for r in (ok, breach, failed)]
        for report in ("all", "alerts")
    }
    assert deliveries == {"all": ["slack"] * 3, "alerts": ["not an alert", "slack", "slack"]}
    emojis = [r.body["text"].split(" ", 1)[0] for r in slack_server.requests]
    assert emojis == ["\u2705", "\U0001f6a8", "\U0001f6a8", "\U0001f6a8", "\U0001f6a8"]
    rerun = ok.model_copy(update={"run_id": "run-2"})
    assert slack.send_result(rerun, 0.5, ok, "all") == "unchanged"
    assert (
        slack.send_result(breach.model_copy(update={"run_id": "run-2"}), 0.5, breach, "alerts") == "unchanged"
    )
    assert len(slack_server.requests) == 5
