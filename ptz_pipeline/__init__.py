"""ptz-pipeline: Dagster wiring for PTZ camera georegistration (see ARCHITECTURE.md)."""
