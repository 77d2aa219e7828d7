"""Building blocks of the ONVIF camera backend: position spaces, telemetry, RTSP frames, port-forward."""
