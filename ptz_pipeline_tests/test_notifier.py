"""The seed's SlackNotifier: credentials found in the environment, the seed's argument order, real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ptz_pipeline.notifier import SlackNotifier

pytest_plugins = ["ptz_pipeline_tests.servers"]


def test_notifier_finds_the_webhook_in_the_environment_and_sends_the_seed_report(
    slack_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.webhook_url)
    stamp = datetime(2026, 11, 23, 1, tzinfo=UTC)
    delivery = SlackNotifier().send_calibration_report(
        "site-a", "cam-1", 0.1, -0.7, 0.05, "passive", True, timestamp=stamp
    )
    assert delivery == "webhook"
    [request] = slack_server.requests
    text = request.body["text"]
    assert text.startswith("\N{POLICE CARS REVOLVING LIGHT} Camera Calibration Report")  # |yaw| > 0.5°
    assert "Device: cam-1" in text and "Timestamp: 2026-11-23T01:00:00Z" in text and "Yaw=-0.7°" in text


def test_notifier_without_slack_configured_logs_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_ACCESS_TOKEN", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    notifier = SlackNotifier()
    assert (
        notifier.send_calibration_report("site-a", "cam-1", None, None, None, "active", False, "unreachable")
        == "log"
    )
