"""SAP OData services (S/4HANA, SAP Gateway, CAP; OData v2 and v4) as a source.

One connector is one OData service (`service_url`, e.g.
`https://host/sap/opu/odata/sap/API_BUSINESS_PARTNER_SRV`). Its entity sets are the
tables; `$metadata` gives their properties, types and keys; the protocol version
(v2: EDMX 1.0, v4: EDMX 4.0) is read from it.

Reading:

* **Rows are paged by key (keyset paging).** A chunk is a half-open range over the
  ordering key (the entity key for full loads; (change timestamp, key) for delta loads),
  written as a `$filter` with the tuple comparison expanded:
  `ChangedAt gt X or (ChangedAt eq X and ID gt K)`, ordered by `$orderby=ChangedAt,ID`.
  Inside a chunk the connector asks for `$top=page_size` rows at a time and follows the
  server's own paging (`__next` in v2, `@odata.nextLink` in v4) when the server caps
  the page; the next request continues after the last key read. A chunk ends at the
  first empty answer, so a server that caps pages silently loses nothing. An entity set
  whose key is not filterable (`sap:filterable="false"`) is read in one chunk with
  `$skip`; one marked `sap:pageable="false"` in one request (and its next links).
* **Chunks are planned by counting**: `/$count` with the scope's `$filter` gives the
  rows, and `$orderby=<key>&$skip=N&$top=1&$select=<key>` gives every N-th key as a
  chunk bound. There are no time windows (OData has no GROUP BY for a window count);
  `chunk_strategy=time` therefore also chunks by row counts along (cursor, key).
* **One Arrow record batch per page**, with columns typed by `$metadata`:
  Edm.Int16/32/64 → int16/32/64, Edm.Decimal(Precision, Scale) → decimal128(P, S)
  (without a scale: decimal128(38, 10)), Edm.Double/Single → float64/32, Edm.Boolean →
  bool, Edm.DateTime (v2 `/Date(ms)/`) → timestamp[us] (date32 for
  `sap:display-format="Date"`), Edm.DateTimeOffset → timestamp[us, UTC], Edm.Date →
  date32, Edm.Time / Edm.TimeOfDay → time64[us], Edm.Binary → binary, Edm.Guid and
  everything else → string; complex and collection values land as JSON text. JSON is
  parsed with decimals kept exact (never through a float).
* **Filter literals per version**: strings `'O''Brien'` (quotes doubled) in both;
  v2 `datetime'2024-03-01T10:00:00'`, `datetimeoffset'2024-03-01T10:00:00Z'`, `12L`,
  `1.5M`, `guid'…'`, `time'PT10H'`; v4 bare `2024-03-01T10:00:00Z`, `2024-03-01`, `12`,
  `1.5`. Query strings are percent-encoded with `%20` for spaces (some servers read `+`
  literally).
* **Cursor precision.** v2 JSON carries timestamps to the millisecond, v4 to the
  fraction the server writes (kept to the microsecond); servers compare literals at
  their own precision. The sync's upper bound is `cursor le <max as read>`: a row whose
  digits beyond what the wire shows put it above that maximum is read by the next sync.
  Where a server keeps finer timestamps than its JSON shows (a v2 gateway over
  TIMESTAMPL), the rows of the last shown millisecond are re-read by each delta
  (upserted by key: no duplicate).

Authentication: HTTP basic (username and the connector's password), or none. Reads
need no CSRF token. `client` adds `sap-client=<client>` to every request;
`verify_tls` = no (or a CA bundle path) for systems with self-signed certificates.
A page that fails fails the chunk (retried by the engine when transient: 5xx, 429,
timeouts, lost connections) with the entity set, the page number and the URL named.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    LoadSettings,
    ReadScope,
    StreamRef,
    TableInfo,
    Timeouts,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import requests

DEFAULT_PAGE_SIZE = 1000
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 120.0
_SAP_NS = "http://www.sap.com/Protocols/SAPData"
_EPOCH = dt.datetime(1970, 1, 1)
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_SAFE_QUERY = "$'(),:/*;@=-._~"  # kept as is in query values; everything else is %-encoded
_DECIMAL_DEFAULT = (38, 10)


# --- the service's model ($metadata) ----------------------------------------------------


@dataclass(frozen=True)
class Property:
    name: str
    edm_type: str  # "Edm.Int32", or a complex/collection type name
    nullable: bool = True
    precision: int | None = None
    scale: int | None = None  # None: not declared (or variable)
    max_length: int | None = None
    date_only: bool = False  # v2 Edm.DateTime with sap:display-format="Date"
    filterable: bool = True
    sortable: bool = True

    @property
    def is_primitive(self) -> bool:
        return self.edm_type.startswith("Edm.")


@dataclass
class EntitySet:
    name: str
    type_name: str
    properties: list[Property]
    key: list[str]
    label: str | None = None
    pageable: bool = True  # sap:pageable="false": no $top/$skip
    requires_filter: bool = False  # sap:requires-filter="true": no read without a $filter
    props: dict[str, Property] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.props = {p.name: p for p in self.properties}

    @property
    def keyset_paging(self) -> bool:
        """Can rows be paged by `$filter` on the key (else: `$skip`)?"""
        return self.pageable and bool(self.key) and all(
            self.props[k].filterable and self.props[k].sortable for k in self.key)


@dataclass
class ServiceModel:
    version: int  # 2 or 4
    entity_sets: dict[str, EntitySet]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def parse_metadata(data: bytes) -> ServiceModel:
    """Entity sets, their properties and keys from a `$metadata` document (EDMX 1.0 for
    v2, 4.0 for v4). Raises ValueError when the document is not EDMX."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not XML ({exc})") from None
    if _local(root.tag) != "Edmx":
        raise ValueError(f"an <{_local(root.tag)}> document, not EDMX")
    version = 4 if (root.get("Version") or "1.0").startswith("4") else 2
    types: dict[str, ET.Element] = {}
    complex_types: set[str] = set()
    containers: list[tuple[ET.Element, str]] = []
    aliases: dict[str, str] = {}
    for schema in root.iter():
        if _local(schema.tag) != "Schema":
            continue
        namespace = schema.get("Namespace") or ""
        if schema.get("Alias"):
            aliases[schema.get("Alias")] = namespace
        for child in schema:
            kind = _local(child.tag)
            if kind == "EntityType":
                types[f"{namespace}.{child.get('Name')}"] = child
            elif kind == "ComplexType":
                complex_types.add(f"{namespace}.{child.get('Name')}")
            elif kind == "EntityContainer":
                containers.append((child, namespace))

    def resolve(name: str) -> str:
        prefix, dot, rest = name.rpartition(".")
        return f"{aliases.get(prefix, prefix)}.{rest}" if dot else name

    def collect(type_name: str, seen: frozenset = frozenset()) -> tuple[list[Property], list[str], str | None]:
        element = types.get(resolve(type_name))
        if element is None or type_name in seen:
            return [], [], None
        props, key = [], []
        base = element.get("BaseType")
        if base:
            props, key, _ = collect(base, seen | {type_name})
        for child in element:
            kind = _local(child.tag)
            if kind == "Key":
                key = [ref.get("Name") for ref in child if _local(ref.tag) == "PropertyRef"]
            elif kind == "Property":
                props.append(_property(child))
        return props, key, element.get(f"{{{_SAP_NS}}}label")

    sets: dict[str, EntitySet] = {}
    for container, _ns in containers:
        for child in container:
            if _local(child.tag) != "EntitySet":
                continue
            if child.get(f"{{{_SAP_NS}}}addressable") == "false":
                continue  # SAP marks value-help sets that cannot be read on their own
            type_name = child.get("EntityType") or ""
            props, key, label = collect(type_name)
            if not props:
                continue
            sets[child.get("Name")] = EntitySet(
                child.get("Name"), resolve(type_name), props, key, child.get(f"{{{_SAP_NS}}}label") or label,
                pageable=child.get(f"{{{_SAP_NS}}}pageable") != "false",
                requires_filter=child.get(f"{{{_SAP_NS}}}requires-filter") == "true")
    return ServiceModel(version, sets)


def _property(element: ET.Element) -> Property:
    edm_type = element.get("Type") or "Edm.String"
    scale = element.get("Scale")
    return Property(
        name=element.get("Name"),
        edm_type=edm_type,
        nullable=element.get("Nullable", "true") != "false",
        precision=_int(element.get("Precision")),
        scale=_int(scale),
        max_length=_int(element.get("MaxLength")),
        date_only=element.get(f"{{{_SAP_NS}}}display-format") == "Date",
        filterable=element.get(f"{{{_SAP_NS}}}filterable") != "false",
        sortable=element.get(f"{{{_SAP_NS}}}sortable") != "false",
    )


# --- types: Arrow, families, JSON values ----------------------------------------------------


def arrow_type(prop: Property) -> "pa.DataType":
    import pyarrow as pa

    t = prop.edm_type
    if t == "Edm.Decimal":
        precision = min(prop.precision or _DECIMAL_DEFAULT[0], 38)
        scale = prop.scale if prop.scale is not None else (_DECIMAL_DEFAULT[1] if prop.precision is None else 0)
        return pa.decimal128(max(precision, scale, 1), scale)
    if t == "Edm.DateTime":
        return pa.date32() if prop.date_only else pa.timestamp("us")
    simple = {
        "Edm.Boolean": pa.bool_(), "Edm.Byte": pa.int16(), "Edm.SByte": pa.int8(), "Edm.Int16": pa.int16(),
        "Edm.Int32": pa.int32(), "Edm.Int64": pa.int64(), "Edm.Double": pa.float64(), "Edm.Single": pa.float32(),
        "Edm.DateTimeOffset": pa.timestamp("us", tz="UTC"), "Edm.Date": pa.date32(),
        "Edm.Time": pa.time64("us"), "Edm.TimeOfDay": pa.time64("us"), "Edm.Binary": pa.binary(),
    }
    return simple.get(t, pa.string())


_FAMILIES = {
    "Edm.Boolean": "boolean", "Edm.Byte": "integer", "Edm.SByte": "integer", "Edm.Int16": "integer",
    "Edm.Int32": "integer", "Edm.Int64": "integer", "Edm.Decimal": "decimal", "Edm.Double": "float",
    "Edm.Single": "float", "Edm.DateTimeOffset": "timestamptz", "Edm.Date": "date", "Edm.Time": "time",
    "Edm.TimeOfDay": "time", "Edm.Binary": "binary", "Edm.String": "text", "Edm.Guid": "text",
}


def family(prop: Property) -> str:
    if prop.edm_type == "Edm.DateTime":
        return "date" if prop.date_only else "timestamp"
    if not prop.is_primitive:
        return "json"
    return _FAMILIES.get(prop.edm_type, "other")


def type_label(prop: Property) -> str:
    """The source type as shown in the schema browser, e.g. Edm.Decimal(12,3)."""
    if prop.edm_type == "Edm.Decimal" and prop.precision is not None:
        return f"Edm.Decimal({prop.precision},{prop.scale or 0})"
    if prop.max_length is not None:
        return f"{prop.edm_type}({prop.max_length})"
    if prop.date_only:
        return "Edm.DateTime(Date)"
    return prop.edm_type


_V2_DATE = re.compile(r"^/Date\((-?\d+)(?:([+-])(\d{4}))?\)/$")
_ISO = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?\s*(Z|[+-]\d\d:?\d\d)?$")
_DURATION = re.compile(r"^-?P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_moment(value: Any) -> dt.datetime:
    """A v2 `/Date(ms[+-offset])/` or an ISO 8601 text as a datetime: aware (UTC) when
    the text carries a zone, naive otherwise. Fractions beyond microseconds are cut."""
    if isinstance(value, (int, float)):
        return _EPOCH + dt.timedelta(milliseconds=value)
    text = str(value).strip()
    match = _V2_DATE.match(text)
    if match:
        moment = _EPOCH + dt.timedelta(milliseconds=int(match.group(1)))
        # the milliseconds are UTC; an offset only says in which zone it was written
        return moment.replace(tzinfo=dt.timezone.utc) if match.group(2) else moment
    match = _ISO.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a date and time")
    y, mo, d, h, mi, s, frac, zone = match.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    moment = dt.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro)
    if zone:
        if zone == "Z":
            offset = dt.timedelta(0)
        else:
            digits = zone.replace(":", "")
            offset = dt.timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))
            offset = -offset if digits[0] == "-" else offset
        moment = (moment - offset).replace(tzinfo=dt.timezone.utc)
    return moment


def parse_time(value: Any) -> dt.time:
    """v2 `PT10H30M15S` or v4 `10:30:15.123`."""
    text = str(value).strip()
    match = _DURATION.match(text)
    if match and text.startswith("P"):
        days, hours, minutes, seconds = match.groups()
        total = dt.timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                             seconds=float(seconds or 0))
        return (dt.datetime.min + total).time()
    return dt.time.fromisoformat(text[:15] if "." in text else text)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip().rstrip("mM"))


def value_converter(prop: Property) -> Callable[[Any], Any]:
    """JSON value -> the Python value Arrow takes for the property's type."""
    t = prop.edm_type
    if not prop.is_primitive:
        def as_json(v):
            if isinstance(v, dict):
                v = {k: x for k, x in v.items() if k != "__metadata"}
                v = v.get("results", v) if set(v) == {"results"} else v
            return json.dumps(v, ensure_ascii=False, default=str)
        return as_json
    if t in ("Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte"):
        return int
    if t == "Edm.Decimal":
        quantum = Decimal(1).scaleb(-arrow_type(prop).scale)

        def as_decimal(v):
            d = _decimal(v)
            return d if -d.as_tuple().exponent <= -quantum.as_tuple().exponent else d.quantize(quantum)
        return as_decimal
    if t in ("Edm.Double", "Edm.Single"):
        return lambda v: float(v) if not isinstance(v, str) else float(v.rstrip("dDfF"))
    if t == "Edm.Boolean":
        return lambda v: v if isinstance(v, bool) else str(v).lower() in ("true", "1", "x")
    if t == "Edm.DateTime":
        if prop.date_only:
            return lambda v: parse_moment(v).date()
        return lambda v: parse_moment(v).replace(tzinfo=None)
    if t == "Edm.DateTimeOffset":
        def as_utc(v):
            moment = parse_moment(v)
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        return as_utc
    if t == "Edm.Date":
        return lambda v: parse_moment(v).date()
    if t in ("Edm.Time", "Edm.TimeOfDay"):
        return parse_time
    if t == "Edm.Binary":
        return lambda v: base64.b64decode(v + "=" * (-len(v) % 4), altchars=b"-_" if ("-" in v or "_" in v) else None)
    if t == "Edm.String" or t == "Edm.Guid":
        return lambda v: v if isinstance(v, str) else str(v)
    return lambda v: v if isinstance(v, str) else json.dumps(v, default=str)


# --- filter literals ------------------------------------------------------------------------


def _iso(moment: dt.datetime) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return parse_moment(value).replace(tzinfo=None)


def literal(prop: Property, value: Any, version: int) -> str:
    """`value` written as a `$filter` literal for the property's type and the version."""
    if value is None:
        return "null"
    t = prop.edm_type
    v2 = version < 4
    if t in ("Edm.String",) or not prop.is_primitive:
        return "'" + str(value).replace("'", "''") + "'"
    if t == "Edm.Guid":
        return f"guid'{value}'" if v2 else str(value)
    if t == "Edm.Boolean":
        return "true" if value else "false"
    if t in ("Edm.Int16", "Edm.Int32", "Edm.Byte", "Edm.SByte"):
        return str(int(value))
    if t == "Edm.Int64":
        return f"{int(value)}L" if v2 else str(int(value))
    if t == "Edm.Decimal":
        text = format(_decimal(value), "f")
        return f"{text}M" if v2 else text
    if t in ("Edm.Double", "Edm.Single"):
        text = repr(float(value))
        return text + ("d" if t == "Edm.Double" else "f") if v2 else text
    if t == "Edm.DateTime":
        return f"datetime'{_iso(_utc(value))}'"
    if t == "Edm.DateTimeOffset":
        text = _iso(_utc(value)) + "Z"
        return f"datetimeoffset'{text}'" if v2 else text
    if t == "Edm.Date":
        day = value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else _utc(value).date()
        return day.isoformat()
    if t in ("Edm.Time", "Edm.TimeOfDay"):
        moment = value if isinstance(value, dt.time) else parse_time(value)
        if v2:
            seconds = f"{moment.second}" + (f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else "")
            return f"time'PT{moment.hour}H{moment.minute}M{seconds}S'"
        return moment.isoformat()
    if t == "Edm.Binary":
        data = bytes(value)
        return f"binary'{data.hex().upper()}'" if v2 else "binary'" + base64.urlsafe_b64encode(data).decode() + "'"
    return "'" + str(value).replace("'", "''") + "'"


# --- the connector --------------------------------------------------------------------------


def _truthy(value: Any, default: bool = True) -> bool:
    if value in (None, ""):
        return default
    return str(value).strip().lower() in ("1", "yes", "true", "on")


class ODataConnector:
    """An SAP OData v2/v4 service; entity sets are its tables (see the module docstring)."""

    def __init__(self, spec: ConnectorSpec):
        self.spec = spec
        url = str(spec.option("service_url") or "").strip()
        if not url:
            raise ConfigError("The SAP OData connector needs a service_url, e.g. "
                              "https://host/sap/opu/odata/sap/API_BUSINESS_PARTNER_SRV.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"service_url must be an http(s) URL, not '{url}'.")
        # user:password@ in the URL is never kept (nor shown); credentials go in headers
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.root = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/", "", ""))
        self._base_query = parts.query
        self.origin = f"{parts.scheme}://{netloc}"
        self.page_size = int(spec.option("page_size", DEFAULT_PAGE_SIZE))
        if self.page_size < 1:
            raise ConfigError(f"page_size must be a positive whole number, not {self.page_size}.")
        self._session: "requests.Session | None" = None
        self._lock = threading.Lock()
        self._model: ServiceModel | None = None

    schema = None  # entity sets have no schema

    # --- HTTP ----------------------------------------------------------------------------

    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            import requests

            session = requests.Session()
            user = self.spec.option("username")
            if user or self.spec.password:
                session.auth = (user or "", self.spec.password or "")
            verify = self.spec.option("verify_tls")
            if verify not in (None, "") and str(verify).lower() not in ("1", "yes", "true", "on", "0", "no", "false", "off"):
                session.verify = str(verify)  # a CA bundle
            else:
                session.verify = _truthy(verify, True)
            session.headers["User-Agent"] = "ESG-Workbench"
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _query(self, params: dict[str, Any]) -> str:
        parts = [self._base_query] if self._base_query else []
        client = self.spec.option("client")
        if client not in (None, "") and "sap-client=" not in self._base_query:
            parts.append(f"sap-client={quote(str(client), safe='')}")
        for name, value in params.items():
            if value is not None:
                parts.append(f"{name}={quote(str(value), safe=_SAFE_QUERY)}")
        return "&".join(parts)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = self._query(params or {})
        return self.root + path + (f"?{query}" if query else "")

    def _rebase(self, link: str, current: str) -> str:
        """A server's next link, on our origin (gateways behind proxies often write
        internal host names) and with sap-client kept."""
        absolute = urljoin(current, link)
        parts = urlsplit(absolute)
        query = parts.query
        client = self.spec.option("client")
        if client not in (None, "") and "sap-client=" not in query:
            query = (query + "&" if query else "") + f"sap-client={quote(str(client), safe='')}"
        own = urlsplit(self.origin)
        return urlunsplit((own.scheme, own.netloc, parts.path, query, ""))

    def shown(self, url: str) -> str:
        """A URL as shown in messages: readable, without credentials."""
        parts = urlsplit(url)
        return unquote(urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, parts.query, "")))

    def _get(self, url: str, what: str, *, accept: str = "application/json", missing: type[EsgError] = TableMissing):
        import requests

        try:
            timeout = (Timeouts.given(self.spec.options, "connect", CONNECT_TIMEOUT),
                       Timeouts.given(self.spec.options, "read", READ_TIMEOUT))
            response = self.session.get(url, headers={"Accept": accept}, timeout=timeout)
        except requests.exceptions.SSLError as exc:
            raise SourceUnreachable(
                f"{what}: the TLS certificate of {self.origin} was not accepted ({_reason(exc)}).",
                hint="Install the company's CA certificate and name it in verify_tls, or set verify_tls=no "
                     "for a test system.", code="TLS") from None
        except requests.exceptions.ConnectTimeout:
            raise SourceUnreachable(f"{what}: {self.origin} did not answer within {timeout[0]:.0f} s.",
                                    code="timeout") from None
        except requests.exceptions.Timeout:
            raise TransientSourceError(f"{what}: {self.origin} did not answer within {timeout[1]:.0f} s. "
                                       f"URL: {self.shown(url)}", code="timeout") from None
        except requests.exceptions.ConnectionError as exc:
            reason = _reason(exc)
            if any(w in reason.lower() for w in ("refused", "name or service", "resolve", "no route",
                                                 "nodename", "unreachable", "failed to establish")):
                raise SourceUnreachable(f"{what}: {self.origin} cannot be reached ({reason}).",
                                        code=_errno(exc)) from None
            raise TransientSourceError(f"{what}: the connection to {self.origin} was lost ({reason}). "
                                       f"URL: {self.shown(url)}", code=_errno(exc)) from None
        except requests.exceptions.InvalidURL:
            raise ConfigError(f"{what}: '{self.shown(url)}' is not a valid URL.") from None
        if response.status_code >= 400:
            raise self._http_error(response, what, url, missing)
        return response

    def _http_error(self, response, what: str, url: str, missing: type[EsgError]) -> EsgError:
        status = response.status_code
        sap_code, text = _error_text(response)
        detail = f"HTTP {status}" + (f" {sap_code}" if sap_code else "") + (f": {text}" if text else "")
        code = str(status)
        user = self.spec.option("username")
        if status == 401:
            who = f"the user '{user}'" if user else "a request without credentials"
            return AuthenticationFailed(f"{what}: the SAP system at {self.origin} refused {who} ({detail}).",
                                        code=code)
        if status == 403:
            return PermissionDenied(
                f"{what}: the user '{user}' may not use this service ({detail}). URL: {self.shown(url)}",
                hint="Ask the SAP administrator for a role that allows reading this OData service "
                     "(authorization objects S_SERVICE and the service's own).", code=code)
        if status == 404:
            if missing is DatabaseMissing:
                return DatabaseMissing(f"{what}: there is no OData service at {self.root} ({detail}).",
                                       hint="Check service_url: it names the service root, e.g. "
                                            "https://host/sap/opu/odata/sap/API_BUSINESS_PARTNER_SRV, and the "
                                            "service must be activated in the gateway (/IWFND/MAINT_SERVICE).",
                                       code=code)
            return missing(f"{what}: not found ({detail}). URL: {self.shown(url)}", code=code)
        if status in _TRANSIENT_STATUSES:
            return TransientSourceError(f"{what} failed ({detail}). URL: {self.shown(url)}", code=code)
        return SourceError(f"{what}: the service refused the request ({detail}). URL: {self.shown(url)}",
                           hint="The service may not support this query option; report the URL and message.",
                           code=code)

    def _get_json(self, url: str, what: str) -> Any:
        response = self._get(url, what)
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content")
            raise SourceError(f"{what}: the answer is not JSON ({kind}). URL: {self.shown(url)}",
                              hint="Check that service_url names an OData service.") from None

    # --- the model ---------------------------------------------------------------------------

    @property
    def model(self) -> ServiceModel:
        with self._lock:
            if self._model is None:
                self._model = self._load_model("Reading the service's $metadata")
            return self._model

    def _load_model(self, what: str) -> ServiceModel:
        url = self.url("$metadata")
        response = self._get(url, what, accept="application/xml", missing=DatabaseMissing)
        try:
            return parse_metadata(response.content)
        except ValueError as exc:
            raise SourceError(
                f"{what}: {self.root} is not an OData service: its $metadata is {exc}.",
                hint="service_url must name an OData service root (…/sap/opu/odata/sap/<SERVICE> or "
                     "…/odata/v4/<service>), not a web page or a single entity set.", code="not-odata") from None

    @property
    def version(self) -> int:
        return self.model.version

    def entity_set(self, stream: StreamRef) -> EntitySet:
        found = self.model.entity_sets.get(stream.table)
        if found is None:
            raise TableMissing(f"The entity set {stream.table} does not exist in the service {self.root} (any more).")
        return found

    # --- validate and discover -----------------------------------------------------------------

    def validate(self) -> str:
        model = self._load_model("Connecting")
        with self._lock:
            self._model = model
        if not model.entity_sets:
            raise DatabaseMissing(f"The OData service at {self.root} has no entity sets to read.",
                                  hint="Check service_url; the service may expose only functions.")
        readable = [es for es in model.entity_sets.values() if not es.requires_filter]
        first = (readable or list(model.entity_sets.values()))[0]
        url = self.url(first.name, {**({"$top": 1} if first.pageable else {}),
                                    **({"$format": "json"} if model.version < 4 else {})})
        self._rows(self._get_json(url, f"Reading the entity set {first.name}"), url)
        return (f"Connected. OData v{model.version} service at {self.root}: {len(model.entity_sets)} entity "
                f"sets; {first.name} is readable.")

    def list_streams(self) -> list[StreamRef]:
        return [StreamRef(None, name) for name in sorted(self.model.entity_sets)]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        wanted = None if streams is None else {s.table for s in streams}
        infos = []
        for name in sorted(self.model.entity_sets):
            if wanted is not None and name not in wanted:
                continue
            es = self.model.entity_sets[name]
            infos.append(TableInfo(
                stream=StreamRef(None, name),
                columns=[ColumnInfo(p.name, type_label(p), p.nullable, p.name in es.key, family(p))
                         for p in es.properties],
                primary_key=list(es.key),
            ))
        return infos

    def sample(self, stream: StreamRef, limit: int) -> list[dict[str, Any]]:
        from esg_workbench.connectors.sql import json_safe

        es = self.entity_set(stream)
        url = self.url(es.name, self._params(es, [p.name for p in es.properties], top=limit if es.pageable else None))
        payload = self._get_json(url, f"Reading sample rows of {es.name}")
        rows, _ = self._rows(payload, url)
        batch = self._batch(es, [p.name for p in es.properties], rows[:limit])
        return [{k: json_safe(v) for k, v in row.items()} for row in batch.to_pylist()]

    # --- query building ------------------------------------------------------------------------

    def _params(self, es: EntitySet, columns: list[str] | None, *, filters: list[str] | None = None,
                orderby: list[str] | None = None, top: int | None = None, skip: int | None = None) -> dict:
        params: dict[str, Any] = {}
        if columns is not None and set(columns) != set(es.props):
            params["$select"] = ",".join(columns)
        if filters:
            params["$filter"] = " and ".join(f"({f})" if " or " in f else f for f in filters)
        if orderby:
            params["$orderby"] = ",".join(orderby)
        if skip:
            params["$skip"] = skip
        if top is not None:
            params["$top"] = top
        if self.version < 4:
            params["$format"] = "json"
        return params

    def compare(self, es: EntitySet, key: list[str], bound: tuple, op: str) -> str:
        """`(k1..kn) op (v1..vn)` over a prefix of the key, expanded:
        `a gt x or (a eq x and b gt y)`."""
        cols = key[: len(bound)]
        lit = [literal(es.props[c], v, self.version) for c, v in zip(cols, bound)]
        strict = {">": "gt", ">=": "gt", "<": "lt"}[op]
        last = {">": "gt", ">=": "ge", "<": "lt"}[op]
        expr = f"{cols[-1]} {last} {lit[-1]}"
        for c, v in zip(reversed(cols[:-1]), reversed(lit[:-1])):
            expr = f"{c} {strict} {v} or ({c} eq {v} and {expr})"
        return expr

    def _conditions(self, es: EntitySet, scope: ReadScope, chunk: ChunkRange | None) -> tuple[list[str], list[str]]:
        """The `$filter` terms of a scope and chunk, and the key the rows are ordered by."""
        conds: list[str] = []
        key = list(scope.key)
        cursor = scope.cursor_field
        if chunk is not None and chunk.null_cursor:
            conds.append(f"{cursor} eq null")
            key = [k for k in key if k != cursor]
        else:
            if cursor and cursor in key:
                conds.append(f"{cursor} ne null")
            if scope.after is not None:
                conds.append(self.compare(es, key, scope.after, ">=" if scope.after_inclusive else ">"))
            if scope.cursor_max is not None:
                conds.append(self.cursor_at_most(es, cursor, scope.cursor_max))
        if chunk is not None:
            if chunk.lower is not None:
                conds.append(self.compare(es, key, chunk.lower, ">="))
            if chunk.upper is not None:
                conds.append(self.compare(es, key, chunk.upper, "<"))
        return conds, key

    def cursor_at_most(self, es: EntitySet, cursor: str, value: Any) -> str:
        """The sync's upper bound on the cursor: `le <max as read>`. Servers compare
        literals at their own precision (CAP cuts them to milliseconds), so `lt max + 1 µs`
        would be `lt max` there and drop the latest rows. A row whose digits below what
        the wire shows put it just above the maximum is read by the next sync."""
        return f"{cursor} le {literal(es.props[cursor], value, self.version)}"

    # --- planning --------------------------------------------------------------------------------

    def count(self, stream: StreamRef, scope: ReadScope, within: ChunkRange | None = None) -> int:
        es = self.entity_set(stream)
        conds, _ = self._conditions(es, scope, within)
        return self._count(es, conds, f"Counting rows of {es.name}")

    def _count(self, es: EntitySet, conds: list[str], what: str) -> int:
        params = self._params(es, None, filters=conds)
        params.pop("$format", None)
        url = self.url(f"{es.name}/$count", params)
        text = self._get(url, what, accept="text/plain").text.strip()
        try:
            return int(text)
        except ValueError:
            raise SourceError(f"{what}: /$count answered '{text[:80]}', not a number. URL: {self.shown(url)}") from None

    def _first(self, es: EntitySet, columns: list[str], conds: list[str], orderby: list[str], skip: int,
               what: str) -> tuple | None:
        url = self.url(es.name, self._params(es, columns, filters=conds, orderby=orderby, top=1, skip=skip))
        rows, _ = self._rows(self._get_json(url, what), url)
        if not rows:
            return None
        return tuple(value_converter(es.props[c])(rows[0][c]) if rows[0].get(c) is not None else None
                     for c in columns)

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any:
        es = self.entity_set(stream)
        if cursor_field not in es.props:
            raise ConfigError(f"The cursor field '{cursor_field}' is not a property of {es.name}.")
        row = self._first(es, [cursor_field], [f"{cursor_field} ne null"], [f"{cursor_field} desc"], 0,
                          f"Reading the latest {cursor_field} of {es.name}")
        return None if row is None else row[0]

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int:
        es = self.entity_set(stream)
        return self._count(es, [f"{cursor_field} eq null"], f"Counting rows of {es.name} without {cursor_field}")

    def key_range(self, stream: StreamRef, scope: ReadScope) -> tuple[Any, Any, int]:
        es = self.entity_set(stream)
        conds, key = self._conditions(es, scope, None)
        what = f"Measuring {es.name}"
        low = self._first(es, key[:1], conds, [key[0]], 0, what)
        high = self._first(es, key[:1], conds, [f"{key[0]} desc"], 0, what)
        return (low or (None,))[0], (high or (None,))[0], self._count(es, conds, what)

    def boundaries(self, stream: StreamRef, scope: ReadScope, every: int,
                   within: ChunkRange | None = None) -> list[tuple]:
        """Every `every`-th key in key order (excluding the first), one `$skip`/`$top=1`
        request each."""
        es = self.entity_set(stream)
        conds, key = self._conditions(es, scope, within)
        bounds = []
        skip = every
        while True:
            row = self._first(es, key, conds, key, skip, f"Planning chunks of {es.name}")
            if row is None:
                return bounds
            bounds.append(row)
            skip += every

    def plan_chunks(self, stream: StreamRef, scope: ReadScope, settings: LoadSettings):
        """Chunks of `chunk_size` rows along the ordering key (no time windows, see the
        module docstring); rows without a cursor value get chunks of their own."""
        from esg_workbench.sync import planner

        es = self.entity_set(stream)
        rows = self.count(stream, scope)
        chunk_size = settings.chunk_size or planner.auto_sizing(rows).chunk_size
        sizing = planner.Sizing(chunk_size, None)
        if not es.keyset_paging:  # read whole with $skip paging
            return ([ChunkRange()] if rows else []), sizing
        chunks: list[ChunkRange] = []
        if scope.include_null_cursor and scope.cursor_field:
            nulls = self.null_cursor_count(stream, scope.cursor_field)
            if nulls:
                outer = ChunkRange(null_cursor=True)
                bounds = self.boundaries(stream, scope, chunk_size, within=outer) if nulls > chunk_size else []
                chunks += _between(bounds, outer)
        if rows:
            bounds = self.boundaries(stream, scope, chunk_size) if rows > chunk_size else []
            chunks += _between(bounds, ChunkRange())
        return chunks, sizing

    # --- reading ----------------------------------------------------------------------------------

    def _rows(self, payload: Any, url: str) -> tuple[list[dict], str | None]:
        """The rows and the next link of a v2 or v4 JSON answer."""
        if isinstance(payload, dict) and "d" in payload:  # v2
            body = payload["d"]
            if isinstance(body, list):
                return body, None
            if isinstance(body, dict) and isinstance(body.get("results"), list):
                return body["results"], body.get("__next")
        elif isinstance(payload, dict) and isinstance(payload.get("value"), list):  # v4
            return payload["value"], payload.get("@odata.nextLink") or payload.get("odata.nextLink")
        raise SourceError(f"The answer of {self.shown(url)} is not an OData collection.",
                          hint="Check that service_url names an OData service.")

    def _batch(self, es: EntitySet, columns: list[str], rows: list[dict]) -> "pa.RecordBatch":
        import pyarrow as pa

        arrays, fields = [], []
        for name in columns:
            prop = es.props[name]
            convert = value_converter(prop)
            values = []
            for row in rows:
                value = row.get(name)
                values.append(None if value is None else convert(value))
            typ = arrow_type(prop)
            arrays.append(pa.array(values, type=typ))
            fields.append(pa.field(name, typ, prop.nullable))
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        """The chunk's rows in key order, one record batch per page (see the module
        docstring for the paging)."""
        es = self.entity_set(stream)
        columns = list(scope.columns)
        missing = [c for c in columns if c not in es.props]
        if missing:
            from esg_workbench.core.errors import SchemaDrift

            raise SchemaDrift(f"{es.name} no longer has the properties {', '.join(missing)}.")
        conds, key = self._conditions(es, scope, chunk)
        select = list(dict.fromkeys(columns + key))
        keyset = es.keyset_paging and bool(key)
        sortable = all(es.props[k].sortable for k in key)
        after: tuple | None = None
        page = 0
        skip = 0
        what = f"Reading {es.name} {chunk.describe()}"
        while True:
            filters = conds + ([self.compare(es, key, after, ">")] if keyset and after is not None else [])
            url = self.url(es.name, self._params(es, select, filters=filters, orderby=(key if sortable else None) or None,
                                                 top=self.page_size if es.pageable else None,
                                                 skip=None if keyset else skip))
            got = 0
            while url:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                page += 1
                payload = self._get_json(url, f"{what}, page {page}")
                rows, link = self._rows(payload, url)
                if rows:
                    try:
                        batch = self._batch(es, select, rows)
                    except (ValueError, TypeError, InvalidOperation, ArithmeticError) as exc:
                        raise SourceError(f"{what}, page {page}: a value does not fit the type $metadata "
                                          f"declares ({type(exc).__name__}: {exc}). URL: {self.shown(url)}") from None
                    got += len(rows)
                    if key:
                        last = batch.slice(batch.num_rows - 1, 1).select(key).to_pylist()[0]
                        after = tuple(last[k] for k in key)
                    yield batch.select(columns) if select != columns else batch
                url = self._rebase(link, url) if link else None
            if got == 0 or not es.pageable:
                return
            skip += got


def _between(bounds: list[tuple], outer: ChunkRange) -> list[ChunkRange]:
    edges = [outer.lower, *bounds, outer.upper]
    return [ChunkRange(lo, hi, outer.null_cursor) for lo, hi in zip(edges, edges[1:])]


def _error_text(response) -> tuple[str | None, str]:
    """SAP's error code and message from a v2/v4 JSON or XML error body."""
    body = response.content[:20000]
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else {}
        message = error.get("message")
        if isinstance(message, dict):
            message = message.get("value")
        code = error.get("code")
        return (str(code) if code not in (None, "") else None), _one_line(str(message or ""))
    except (ValueError, AttributeError):
        pass
    try:
        root = ET.fromstring(body)
        code = next((e.text for e in root.iter() if _local(e.tag) == "code"), None)
        message = next((e.text for e in root.iter() if _local(e.tag) == "message"), None)
        if code or message:
            return code, _one_line(message or "")
    except ET.ParseError:
        pass
    text = re.sub(r"<[^>]+>", " ", body.decode("utf-8", "replace"))
    return None, _one_line(text)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, in a few words."""
    seen = exc
    for _ in range(6):
        inner = getattr(seen, "reason", None) or seen.__context__ or (seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None)
        if inner is None or inner is seen or not isinstance(inner, BaseException):
            break
        seen = inner
    text = str(seen)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    text = re.sub(r"<[^>]+>:?\s*", "", text)
    return _one_line(text, 160) or type(seen).__name__


def _errno(exc: BaseException) -> str | None:
    match = re.search(r"\[Errno (-?\d+)\]", repr(exc)) or re.search(r"\[Errno (-?\d+)\]", str(exc))
    return f"errno {match.group(1)}" if match else None
