"""A minimal ONVIF server (SOAP 1.2 over HTTP) for one simulated PTZ camera, enough for onvif-zeep clients.

Services (one HTTP port; SOAP is dispatched on the operation's namespace and name):

- device ``/onvif/device_service``: GetCapabilities, GetServices, GetDeviceInformation, GetSystemDateAndTime
- media ``/onvif/media_service``: GetProfiles (one profile with a PTZ configuration), GetStreamUri (the RTSP
  URL), GetSnapshotUri (``/onvif/snapshot.jpg`` on this server: a JPEG of the current view)
- PTZ ``/onvif/ptz_service``: GetNodes, GetConfigurations, GetConfigurationOptions, AbsoluteMove, Stop,
  GetStatus

Every SOAP call but GetSystemDateAndTime needs a WS-Security UsernameToken (PasswordDigest
``base64(sha1(nonce + created + password))`` or PasswordText; ``Created`` is not checked against the clock);
otherwise a SOAP 1.2 fault ``env:Sender / ter:NotAuthorized`` with HTTP 400. Plain HTTP paths (the snapshot
and the ``routes`` given by the caller) take HTTP digest (MD5, qop=auth; the challenge) or basic auth.

Absolute position spaces (``AbsoluteMove`` Speed is ignored; ``Stop`` stops all axes):

- default, degrees: pan/tilt :data:`DEGREES_PAN_TILT_SPACE` (x = pan degrees, advertised 0..360, commands
  accepted in -360..360 and wrapped; y = tilt degrees -90..90), reported pan in [0, 360)
- ``generic_space=True``: ONVIF's :data:`GENERIC_PAN_TILT_SPACE`, x and y in -1..1 mapped linearly onto
  ``pan_range_deg`` and ``tilt_range_deg``
- zoom in both: :data:`GENERIC_ZOOM_SPACE` 0..1 (the pipeline's normalised zoom)

``move_status="garbage"`` reports MoveStatus as the WSDL template text ``string`` (as some cameras do).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.request import parse_http_list, parse_keqv_list
from xml.sax.saxutils import escape, quoteattr

from ptz_pipeline.sim.head import SlewingHead, wrap_pan

log = logging.getLogger(__name__)

DEGREES_PAN_TILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionSpaceDegrees"
"""Absolute pan/tilt in degrees (x: pan 0..360, y: tilt -90..90); not an ONVIF-defined space."""
GENERIC_PAN_TILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
"""ONVIF's normalised absolute pan/tilt space, x and y in -1..1."""
GENERIC_ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
"""ONVIF's normalised absolute zoom space, 0..1."""

DEVICE_PATH, MEDIA_PATH, PTZ_PATH = "/onvif/device_service", "/onvif/media_service", "/onvif/ptz_service"
SNAPSHOT_PATH = "/onvif/snapshot.jpg"
PTZ_NODE_TOKEN, PTZ_CONFIG_TOKEN = "ptz_node", "ptz_config"
DIGEST_NONCE_LIFETIME_S = 300.0

ENV = "http://www.w3.org/2003/05/soap-envelope"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TT = "http://www.onvif.org/ver10/schema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_ENVELOPE = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="{ENV}" xmlns:tds="{TDS}" '
    f'xmlns:trt="{TRT}" xmlns:tptz="{TPTZ}" xmlns:tt="{TT}" xmlns:ter="http://www.onvif.org/ver10/error">'
    "<env:Body>{body}</env:Body></env:Envelope>"
)

Route = Callable[[str, bytes], tuple[int, str, bytes]]
"""An extra HTTP endpoint: (method, request body) -> (status, content type, response body)."""


class SoapFaultError(Exception):
    """A SOAP 1.2 fault: HTTP status, ``env:Sender``/``env:Receiver``, ONVIF ``ter:`` subcodes, reason."""

    def __init__(self, status: int, code: str, subcodes: tuple[str, ...], reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.subcodes, self.reason = status, code, subcodes, reason

    def xml(self) -> str:
        """The fault as a SOAP 1.2 envelope."""
        subcodes = "".join(f"<env:Subcode><env:Value>ter:{name}</env:Value>" for name in self.subcodes)
        subcodes += "</env:Subcode>" * len(self.subcodes)
        return _ENVELOPE.format(
            body=f"<env:Fault><env:Code><env:Value>env:{self.code}</env:Value>{subcodes}</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{escape(self.reason)}</env:Text></env:Reason></env:Fault>'
        )


def _invalid_arg(subcode: str, reason: str) -> SoapFaultError:
    return SoapFaultError(400, "Sender", ("InvalidArgVal", subcode), reason)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _xml_time(t: datetime) -> str:
    """xs:dateTime in UTC with milliseconds and a Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _range(name: str, low: float, high: float) -> str:
    return f"<tt:{name}><tt:Min>{low:g}</tt:Min><tt:Max>{high:g}</tt:Max></tt:{name}>"


class OnvifServer:
    """ONVIF device/media/PTZ services for ``head`` on ``http://host:port`` (``port=0``: a free port).

    ``snapshot_jpeg()`` returns the current view as JPEG bytes; ``stream_uri`` is what GetStreamUri answers;
    ``routes`` maps extra HTTP paths (auth required) to handlers. ``pan_range_deg``/``tilt_range_deg``
    (degrees) are what the generic space's -1..1 spans.
    """

    def __init__(
        self,
        head: SlewingHead,
        snapshot_jpeg: Callable[[], bytes],
        stream_uri: str,
        user: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        profile_token: str = "profile_1",
        serial_number: str = "sim",
        resolution: tuple[int, int] = (640, 480),
        fps: float = 5.0,
        generic_space: bool = False,
        pan_range_deg: tuple[float, float] = (-180.0, 180.0),
        tilt_range_deg: tuple[float, float] = (-90.0, 90.0),
        move_status: Literal["valid", "garbage"] = "valid",
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        for name, (low, high), limit in (("pan", pan_range_deg, 360.0), ("tilt", tilt_range_deg, 90.0)):
            if not -limit <= low < high <= limit or (name == "pan" and high - low > 360.0):
                raise ValueError(f"{name}_range_deg must be increasing within ±{limit:g} degrees, "
                                 f"got {(low, high)}")
        if move_status not in ("valid", "garbage"):
            raise ValueError(f"move_status must be 'valid' or 'garbage', got {move_status!r}")
        self.head = head
        self.snapshot_jpeg = snapshot_jpeg
        self.stream_uri = stream_uri
        self.host, self.port = host, port
        self.profile_token, self.serial_number = profile_token, serial_number
        self.resolution, self.fps = resolution, fps
        self.generic_space = generic_space
        self.pan_range_deg, self.tilt_range_deg = pan_range_deg, tilt_range_deg
        self.move_status = move_status
        self._user, self._password = user, password
        self._routes: dict[str, Route] = {SNAPSHOT_PATH: self._snapshot, **(routes or {})}
        self._digest_key = secrets.token_bytes(16)
        self._realm = f"ptz-sim {serial_number}"
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._operations: dict[tuple[str, str], Callable[[ET.Element, str], str]] = {
            (TDS, "GetCapabilities"): self._get_capabilities,
            (TDS, "GetServices"): self._get_services,
            (TDS, "GetDeviceInformation"): self._get_device_information,
            (TDS, "GetSystemDateAndTime"): self._get_system_date_and_time,
            (TRT, "GetProfiles"): self._get_profiles,
            (TRT, "GetStreamUri"): self._get_stream_uri,
            (TRT, "GetSnapshotUri"): self._get_snapshot_uri,
            (TPTZ, "GetNodes"): self._get_nodes,
            (TPTZ, "GetConfigurations"): self._get_configurations,
            (TPTZ, "GetConfigurationOptions"): self._get_configuration_options,
            (TPTZ, "AbsoluteMove"): self._absolute_move,
            (TPTZ, "Stop"): self._stop,
            (TPTZ, "GetStatus"): self._get_status,
        }

    @property
    def url(self) -> str:
        """The device service's XAddr ``http://host:port/onvif/device_service``."""
        return f"http://{self.host}:{self.port}{DEVICE_PATH}"

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread; returns once the port accepts connections (OSError if in use)."""
        try:
            self._httpd = _HttpServer((self.host, self.port), _Handler, self)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve ONVIF on {self.host}:{self.port}: port {self.port} is in "
                                     f"use or unavailable ({exc.strerror})") from exc
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), name="onvif-http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close open connections and join every handler thread; idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()  # joins the handler threads
        assert self._thread is not None
        self._thread.join()
        self._httpd = self._thread = None

    # --- HTTP ---------------------------------------------------------------------------------------------

    def handle(self, request: _Handler, method: str) -> None:
        """Answer one HTTP request: SOAP on POST to a service path, routes elsewhere."""
        path = request.path.split("?", 1)[0]
        try:
            body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
            if method == "POST" and path in (DEVICE_PATH, MEDIA_PATH, PTZ_PATH):
                status, content_type, payload = self._soap(body, self._base_url_of(request))
            elif path in self._routes:
                if self._http_authorised(request, method):
                    status, content_type, payload = self._routes[path](method, body)
                else:
                    status, content_type, payload = 401, "text/plain", b"unauthorised\n"
                    request.extra_headers.append(("WWW-Authenticate", self._digest_challenge()))
            else:
                status, content_type, payload = 404, "text/plain", b"not found\n"
        except Exception:  # a bug or a failed render: answer 500 rather than dropping the connection
            log.exception("ONVIF simulator: %s %s failed", method, path)
            status, content_type, payload = 500, "text/plain", b"internal error\n"
        request.reply(status, content_type, payload)

    def _base_url_of(self, request: _Handler) -> str:
        """``http://<Host header>``: XAddrs that work through port forwarding, else the bound address."""
        return f"http://{request.headers.get('Host') or f'{self.host}:{self.port}'}"

    def _snapshot(self, method: str, body: bytes) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"use GET\n"
        return 200, "image/jpeg", self.snapshot_jpeg()

    def _digest_challenge(self) -> str:
        stamp = f"{time.time():.0f}"
        nonce = f"{stamp}:{hmac.new(self._digest_key, stamp.encode(), hashlib.sha256).hexdigest()}"
        return f'Digest realm="{self._realm}", qop="auth", algorithm=MD5, nonce="{nonce}"'

    def _nonce_valid(self, nonce: str) -> bool:
        stamp, _, mac = nonce.partition(":")
        expected = hmac.new(self._digest_key, stamp.encode(), hashlib.sha256).hexdigest()
        try:
            fresh = time.time() - float(stamp) < DIGEST_NONCE_LIFETIME_S
        except ValueError:
            return False
        return hmac.compare_digest(mac, expected) and fresh

    def _http_authorised(self, request: _Handler, method: str) -> bool:
        """HTTP basic or digest (MD5, qop=auth or none) credentials match ``user``/``password``."""
        scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return _same(user, self._user) & _same(password, self._password)
        if scheme.lower() != "digest":
            return False
        fields = parse_keqv_list(parse_http_list(value))
        if not self._nonce_valid(fields.get("nonce", "")) or fields.get("uri") != request.path:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self._user}:{self._realm}:{self._password}")
        ha2 = md5(f"{method}:{fields['uri']}")
        if fields.get("qop") == "auth":
            nc, cnonce = fields.get("nc", ""), fields.get("cnonce", "")
            expected = md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        else:
            expected = md5(f"{ha1}:{fields['nonce']}:{ha2}")
        return _same(fields.get("username", ""), self._user) & _same(fields.get("response", ""), expected)

    # --- SOAP ---------------------------------------------------------------------------------------------

    def _soap(self, body: bytes, base_url: str) -> tuple[int, str, bytes]:
        content_type = "application/soap+xml; charset=utf-8"
        try:
            try:
                envelope = ET.fromstring(body)
            except ET.ParseError as exc:
                reason = f"the request is not well-formed XML: {exc}"
                raise SoapFaultError(400, "Sender", ("WellFormed",), reason) from None
            if envelope.tag != f"{{{ENV}}}Envelope":
                raise SoapFaultError(400, "VersionMismatch", (), "expected a SOAP 1.2 envelope")
            request = envelope.find(f"{{{ENV}}}Body/*")
            if request is None:
                raise SoapFaultError(400, "Sender", ("InvalidArgs",), "the SOAP body is empty")
            namespace, _, name = request.tag[1:].partition("}")
            if (namespace, name) != (TDS, "GetSystemDateAndTime") and not self._soap_authorised(envelope):
                raise SoapFaultError(400, "Sender", ("NotAuthorized",),
                                "NotAuthorized: sender not authorized (wrong user name or password, or no "
                                "WS-Security UsernameToken)")
            operation = self._operations.get((namespace, name))
            if operation is None:
                raise SoapFaultError(500, "Receiver", ("ActionNotSupported",),
                                f"the simulator does not implement {name} ({namespace})")
            response = _ENVELOPE.format(body=operation(request, base_url))
            return 200, content_type, response.encode()
        except SoapFaultError as fault:
            return fault.status, content_type, fault.xml().encode()

    def _soap_authorised(self, envelope: ET.Element) -> bool:
        """The WS-Security UsernameToken names ``user`` with ``password`` (PasswordDigest or PasswordText)."""
        token = envelope.find(f"{{{ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        password = token.find(f"{{{WSSE}}}Password") if token is not None else None
        if token is None or password is None:
            return False
        given = (password.text or "").strip()
        if password.get("Type", "").endswith("#PasswordDigest"):
            try:
                nonce = base64.b64decode((token.findtext(f"{{{WSSE}}}Nonce") or "").strip(), validate=True)
            except binascii.Error:
                return False
            created = (token.findtext(f"{{{WSU}}}Created") or "").strip()
            digest = hashlib.sha1(nonce + created.encode() + self._password.encode()).digest()
            expected = base64.b64encode(digest).decode()
        else:
            expected = self._password
        username = (token.findtext(f"{{{WSSE}}}Username") or "").strip()
        return _same(username, self._user) & _same(given, expected)

    def _check_profile(self, request: ET.Element, namespace: str) -> None:
        token = request.findtext(f"{{{namespace}}}ProfileToken")
        if token != self.profile_token:
            raise _invalid_arg("NoProfile", f"no media profile {token!r} (the simulator has "
                                            f"{self.profile_token!r})")

    # --- device -------------------------------------------------------------------------------------------

    def _get_capabilities(self, request: ET.Element, base_url: str) -> str:
        categories = {text for el in request.iter(f"{{{TDS}}}Category") if (text := (el.text or "").strip())}
        available = {
            "Device": f"<tt:Device><tt:XAddr>{escape(base_url + DEVICE_PATH)}</tt:XAddr></tt:Device>",
            "Media": f"<tt:Media><tt:XAddr>{escape(base_url + MEDIA_PATH)}</tt:XAddr>"
                     "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>false</tt:RTP_TCP>"
                     "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>",
            "PTZ": f"<tt:PTZ><tt:XAddr>{escape(base_url + PTZ_PATH)}</tt:XAddr></tt:PTZ>",
        }
        wanted = set(available) if not categories or "All" in categories else categories
        if not wanted & set(available):
            raise SoapFaultError(400, "Receiver", ("ActionNotSupported", "NoSuchService"),
                            f"no capabilities in categories {sorted(categories)}")
        parts = "".join(xml for name, xml in available.items() if name in wanted)
        return f"<tds:GetCapabilitiesResponse><tds:Capabilities>{parts}</tds:Capabilities>" \
               "</tds:GetCapabilitiesResponse>"

    def _get_services(self, request: ET.Element, base_url: str) -> str:
        services = "".join(
            f"<tds:Service><tds:Namespace>{namespace}</tds:Namespace><tds:XAddr>{escape(base_url + path)}"
            "</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for namespace, path in ((TDS, DEVICE_PATH), (TRT, MEDIA_PATH), (TPTZ, PTZ_PATH))
        )
        return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"

    def _get_device_information(self, request: ET.Element, base_url: str) -> str:
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>ptz-pipeline</tds:Manufacturer>"
            "<tds:Model>simulated PTZ camera</tds:Model><tds:FirmwareVersion>sim-1</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(self.serial_number)}</tds:SerialNumber>"
            "<tds:HardwareId>ptz-pipeline-sim</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    def _get_system_date_and_time(self, request: ET.Element, base_url: str) -> str:
        now = _utc_now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    # --- media --------------------------------------------------------------------------------------------

    def _get_profiles(self, request: ET.Element, base_url: str) -> str:
        width, height = self.resolution
        return (
            f"<trt:GetProfilesResponse><trt:Profiles token={quoteattr(self.profile_token)} fixed=\"true\">"
            f"<tt:Name>{escape(self.profile_token)}</tt:Name>"
            '<tt:VideoSourceConfiguration token="video_source_config"><tt:Name>video source</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:SourceToken>video_source</tt:SourceToken>"
            f'<tt:Bounds x="0" y="0" width="{width}" height="{height}"/></tt:VideoSourceConfiguration>'
            '<tt:VideoEncoderConfiguration token="video_encoder_config"><tt:Name>H.264</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution>"
            f"<tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height></tt:Resolution>"
            f"<tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>{round(self.fps)}</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>8192</tt:BitrateLimit>"
            "</tt:RateControl><tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0"
            "</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false"
            "</tt:AutoStart></tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
            f"</tt:VideoEncoderConfiguration>{self._ptz_configuration('tt:PTZConfiguration')}"
            "</trt:Profiles></trt:GetProfilesResponse>"
        )

    def _media_uri(self, operation: str, uri: str) -> str:
        return (
            f"<trt:{operation}Response><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
            "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:{operation}Response>"
        )

    def _get_stream_uri(self, request: ET.Element, base_url: str) -> str:
        self._check_profile(request, TRT)
        return self._media_uri("GetStreamUri", self.stream_uri)

    def _get_snapshot_uri(self, request: ET.Element, base_url: str) -> str:
        self._check_profile(request, TRT)
        return self._media_uri("GetSnapshotUri", base_url + SNAPSHOT_PATH)

    # --- PTZ ----------------------------------------------------------------------------------------------

    def _pan_tilt_space(self) -> tuple[str, tuple[float, float], tuple[float, float]]:
        """(URI, x range, y range) of the absolute pan/tilt space."""
        if self.generic_space:
            return GENERIC_PAN_TILT_SPACE, (-1.0, 1.0), (-1.0, 1.0)
        return DEGREES_PAN_TILT_SPACE, (0.0, 360.0), (-90.0, 90.0)

    def _pan_tilt_description(self, tag: str) -> str:
        uri, x_range, y_range = self._pan_tilt_space()
        ranges = _range("XRange", *x_range) + _range("YRange", *y_range)
        return f"<tt:{tag}><tt:URI>{uri}</tt:URI>{ranges}</tt:{tag}>"

    @staticmethod
    def _zoom_description(tag: str) -> str:
        return f"<tt:{tag}><tt:URI>{GENERIC_ZOOM_SPACE}</tt:URI>{_range('XRange', 0, 1)}</tt:{tag}>"

    def _supported_spaces(self) -> str:
        return (
            f"{self._pan_tilt_description('AbsolutePanTiltPositionSpace')}"
            f"{self._zoom_description('AbsoluteZoomPositionSpace')}<tt:PanTiltSpeedSpace><tt:URI>"
            "http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace</tt:URI>"
            f"{_range('XRange', 0, 1)}</tt:PanTiltSpeedSpace>"
        )

    def _ptz_configuration(self, tag: str) -> str:
        return (
            f'<{tag} token="{PTZ_CONFIG_TOKEN}"><tt:Name>PTZ</tt:Name><tt:UseCount>1</tt:UseCount>'
            f"<tt:NodeToken>{PTZ_NODE_TOKEN}</tt:NodeToken><tt:DefaultAbsolutePantTiltPositionSpace>"
            f"{self._pan_tilt_space()[0]}</tt:DefaultAbsolutePantTiltPositionSpace>"
            f"<tt:DefaultAbsoluteZoomPositionSpace>{GENERIC_ZOOM_SPACE}</tt:DefaultAbsoluteZoomPositionSpace>"
            f"<tt:DefaultPTZTimeout>PT10S</tt:DefaultPTZTimeout><tt:PanTiltLimits>"
            f"{self._pan_tilt_description('Range')}</tt:PanTiltLimits><tt:ZoomLimits>"
            f"{self._zoom_description('Range')}</tt:ZoomLimits></{tag}>"
        )

    def _get_nodes(self, request: ET.Element, base_url: str) -> str:
        return (
            f'<tptz:GetNodesResponse><tptz:PTZNode token="{PTZ_NODE_TOKEN}" FixedHomePosition="false">'
            f"<tt:Name>PTZ</tt:Name><tt:SupportedPTZSpaces>{self._supported_spaces()}</tt:SupportedPTZSpaces>"
            "<tt:MaximumNumberOfPresets>0</tt:MaximumNumberOfPresets><tt:HomeSupported>false"
            "</tt:HomeSupported></tptz:PTZNode></tptz:GetNodesResponse>"
        )

    def _get_configurations(self, request: ET.Element, base_url: str) -> str:
        configuration = self._ptz_configuration("tptz:PTZConfiguration")
        return f"<tptz:GetConfigurationsResponse>{configuration}</tptz:GetConfigurationsResponse>"

    def _get_configuration_options(self, request: ET.Element, base_url: str) -> str:
        token = request.findtext(f"{{{TPTZ}}}ConfigurationToken")
        if token != PTZ_CONFIG_TOKEN:
            raise _invalid_arg("NoConfig", f"no PTZ configuration {token!r} (the simulator has "
                                           f"{PTZ_CONFIG_TOKEN!r})")
        return (
            "<tptz:GetConfigurationOptionsResponse><tptz:PTZConfigurationOptions>"
            f"<tt:Spaces>{self._supported_spaces()}</tt:Spaces><tt:PTZTimeout><tt:Min>PT1S</tt:Min>"
            "<tt:Max>PT60S</tt:Max></tt:PTZTimeout></tptz:PTZConfigurationOptions>"
            "</tptz:GetConfigurationOptionsResponse>"
        )

    def _to_degrees(self, x: float, y: float) -> tuple[float, float]:
        """A position in the pan/tilt space -> (pan, tilt) degrees; InvalidPosition fault when outside."""
        if self.generic_space:
            if not (-1.0 <= x <= 1.0 and -1.0 <= y <= 1.0):
                raise _invalid_arg("InvalidPosition", f"pan/tilt ({x}, {y}) outside the generic space -1..1")
            (pan_lo, pan_hi), (tilt_lo, tilt_hi) = self.pan_range_deg, self.tilt_range_deg
            pan = pan_lo + (x + 1.0) / 2.0 * (pan_hi - pan_lo)
            return pan, tilt_lo + (y + 1.0) / 2.0 * (tilt_hi - tilt_lo)
        if not (-360.0 <= x <= 360.0 and -90.0 <= y <= 90.0):
            raise _invalid_arg("InvalidPosition", f"pan/tilt ({x}, {y}) degrees outside pan -360..360, "
                                                  "tilt -90..90")
        return x, y

    def _from_degrees(self, pan: float, tilt: float) -> tuple[float, float]:
        """(pan, tilt) degrees -> the pan/tilt space (generic values clamped to -1..1)."""
        if not self.generic_space:
            return wrap_pan(pan), tilt
        (pan_lo, pan_hi), (tilt_lo, tilt_hi) = self.pan_range_deg, self.tilt_range_deg
        pan_in_range = pan_lo + (pan - pan_lo) % 360.0
        x = 2.0 * (pan_in_range - pan_lo) / (pan_hi - pan_lo) - 1.0
        y = 2.0 * (tilt - tilt_lo) / (tilt_hi - tilt_lo) - 1.0
        return min(max(x, -1.0), 1.0), min(max(y, -1.0), 1.0)

    def _absolute_move(self, request: ET.Element, base_url: str) -> str:
        self._check_profile(request, TPTZ)
        pan, tilt, zoom = self.head.target
        pan_tilt = request.find(f"{{{TPTZ}}}Position/{{{TT}}}PanTilt")
        zoom_el = request.find(f"{{{TPTZ}}}Position/{{{TT}}}Zoom")
        try:
            if pan_tilt is not None:
                self._check_space(pan_tilt, self._pan_tilt_space()[0])
                pan, tilt = self._to_degrees(float(pan_tilt.get("x", "")), float(pan_tilt.get("y", "")))
            if zoom_el is not None:
                self._check_space(zoom_el, GENERIC_ZOOM_SPACE)
                zoom = float(zoom_el.get("x", ""))
        except ValueError as exc:
            raise _invalid_arg("InvalidPosition", f"position is not a number: {exc}") from exc
        if not 0.0 <= zoom <= 1.0:
            raise _invalid_arg("InvalidPosition", f"zoom {zoom} outside 0..1")
        self.head.move_to(pan, tilt, zoom)
        return "<tptz:AbsoluteMoveResponse/>"

    @staticmethod
    def _check_space(vector: ET.Element, supported: str) -> None:
        space = vector.get("space")
        if space is not None and space != supported:
            raise _invalid_arg("SpaceNotSupported", f"position space {space} not supported (use {supported})")

    def _stop(self, request: ET.Element, base_url: str) -> str:
        self._check_profile(request, TPTZ)
        self.head.stop()
        return "<tptz:StopResponse/>"

    def _get_status(self, request: ET.Element, base_url: str) -> str:
        self._check_profile(request, TPTZ)
        now = time.monotonic()
        utc = _utc_now()
        pan, tilt, zoom = self.head.position(now)
        pan_moving, tilt_moving, zoom_moving = self.head.moving_axes(now)
        x, y = self._from_degrees(pan, tilt)
        if self.move_status == "garbage":
            pan_tilt_status = zoom_status = "string"
        else:
            pan_tilt_status = "MOVING" if pan_moving or tilt_moving else "IDLE"
            zoom_status = "MOVING" if zoom_moving else "IDLE"
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
            f'<tt:PanTilt x="{x:.6f}" y="{y:.6f}" space="{self._pan_tilt_space()[0]}"/>'
            f'<tt:Zoom x="{zoom:.6f}" space="{GENERIC_ZOOM_SPACE}"/></tt:Position>'
            f"<tt:MoveStatus><tt:PanTilt>{pan_tilt_status}</tt:PanTilt><tt:Zoom>{zoom_status}</tt:Zoom>"
            f"</tt:MoveStatus><tt:UtcTime>{_xml_time(utc)}</tt:UtcTime></tptz:PTZStatus>"
            "</tptz:GetStatusResponse>"
        )


def _same(given: str, expected: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(given.encode(), expected.encode())


class _HttpServer(ThreadingHTTPServer):
    """Threaded HTTP server that remembers its open connections so ``stop`` can close and join them."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], app: OnvifServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open (e.g. idle keep-alive) connection so its handler thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the OnvifServer; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "ptz-pipeline-sim"
    timeout = 60  # seconds an idle keep-alive connection is kept
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.extra_headers: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.app.handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.server.app.handle(self, "POST")

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        """Send a complete response (with the headers queued in ``extra_headers``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.extra_headers:
            self.send_header(name, value)
        self.extra_headers = []
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        log.debug("%s %s", self.address_string(), format % args)
