"""SAP: OData v2 and v4 services through the sync engine, against a SAP CAP service
(v4, and v2 through the adapter) and mock-sap's SAP-shaped v2 services, all started on
localhost by the fixtures in tests/sap_emulators.py; and SAP HANA SQL, which no server
here can run: the SQL the connector would send (compiled for the HANA dialect), the
Arrow batches it builds from hdbcli's values, and hdbcli's own error for a closed port.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

from esg_workbench.connectors import sap_odata
from esg_workbench.connectors.registry import create_connector
from esg_workbench.core import errors
from esg_workbench.core.specs import (
    ChunkRange,
    ColumnInfo,
    ConnectorSpec,
    ReadScope,
    StreamRef,
    SyncStatus,
    TableInfo,
)
from esg_workbench.sync import operations
from esg_workbench.sync.engine import PASSWORD_MARKER, SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, sync_records
from tests.conftest import free_port
from tests.sap_emulators import (  # noqa: F401  (fixtures)
    BP_SERVICE,
    CAP_PASSWORD,
    CAP_USER,
    MOCK_SAP_CLOCK,
    FaultProxy,
    cap,
    cap_readonly,
    http,
    mock_sap,
    mock_sap_with_auth,
)

FAST = (0.01, 0.02, 0.04)
CAP_PATHS = {4: "/odata/v4/esg", 2: "/odata/v2/esg"}


@pytest.fixture
def ws(workspace_url):
    workspace = open_workspace(workspace_url)
    yield workspace
    workspace.close()


def add(ws, name, service_url, password=None, **options):
    config = {"service_url": service_url, **options}
    if password:
        config["username"] = config.get("username", CAP_USER)
        config[PASSWORD_MARKER] = True
    return operations.add_connector(ws, name, "sap_odata", config)


def sync(ws, name, password=CAP_PASSWORD, **kw):
    return SyncEngine(ws, retry_delays=FAST, secret_for=lambda _id: password).run(SyncRequest(connector=name, **kw))


def raw_rows(ws, raw_table, columns):
    prep = ws.engine.dialect.identifier_preparer
    cols = ", ".join(prep.quote(c) for c in columns)
    with ws.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM {prep.quote(raw_table)} ORDER BY 1, 2"))]


def cap_rows(service, entity_set, columns):
    """Every row of an entity set, read over v4 with plain HTTP (following nextLinks)."""
    url = service.url(f"/odata/v4/esg/{entity_set}?$orderby={','.join(columns[:2])}")
    rows = []
    while url:
        status, body = http("GET", url, auth=(CAP_USER, CAP_PASSWORD))
        assert status == 200, body
        data = json.loads(body, parse_float=Decimal)
        rows += data["value"]
        link = data.get("@odata.nextLink")
        url = service.url(f"/odata/v4/esg/{link}") if link else None
    return [tuple(_typed(c, r[c]) for c in columns) for r in rows]


def _typed(column, value):
    if value is None:
        return None
    if column == "modifiedAt":
        return sap_odata.parse_moment(value)
    if column in ("kWh", "cubicMeters", "floorArea"):
        return Decimal(value)
    if column == "readingDate":
        return dt.date.fromisoformat(value)
    return value


def landed(ws, result, stream, columns):
    raw = next(s.raw_table for s in result.streams if s.stream == stream)
    return [tuple(_norm(v) for v in r) for r in raw_rows(ws, raw, columns)]


def _norm(value):
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    return value


def patch_cap(service, version, entity_key, body):
    base = service.url(CAP_PATHS[version])
    status, text = http("PATCH", f"{base}/EnergyReadings({entity_key})", json.dumps(body).encode(),
                        auth=(CAP_USER, CAP_PASSWORD))
    assert status in (200, 204), text


READING_COLUMNS = ["ID", "site", "note", "kWh", "readingDate", "renewable", "modifiedAt"]


# --- CAP: v4 and v2 through the engine ----------------------------------------------------------


@pytest.mark.parametrize("version", [4, 2])
def test_cap_full_then_delta_lands_exactly_the_source(ws, cap, version):
    add(ws, "cap", cap.url(CAP_PATHS[version]), password=True, cursor_field="modifiedAt",
        chunk_size=1000, page_size=150)
    full = sync(ws, "cap", tables=["EnergyReadings"])
    assert full.status is SyncStatus.SUCCESS, full.error
    stream = full.streams[0]
    assert stream.rows_written == 3000 and stream.chunks_planned == 3 and stream.chunks_failed == 0
    assert landed(ws, full, "EnergyReadings", READING_COLUMNS) == cap_rows(cap, "EnergyReadings", READING_COLUMNS)

    # a delta right after the full load re-reads only the tie group at its upper bound (ID 3000)
    first = sync(ws, "cap", tables=["EnergyReadings"], load_type="delta")
    assert first.status is SyncStatus.SUCCESS, first.error
    assert first.streams[0].rows_written == 1

    # rows changed in the source (CAP sets modifiedAt on update) and a new one
    for key in (5, 1500, 2999):
        patch_cap(cap, version, key, {"kWh": "12345.678", "note": f"changed O'Brien {key}"})
    status, text = http("POST", cap.url(CAP_PATHS[version]) + "/EnergyReadings",
                        json.dumps({"ID": 5000, "site": "NEW", "kWh": "1.5"}).encode(), auth=(CAP_USER, CAP_PASSWORD))
    assert status == 201, text
    changed = sync(ws, "cap", tables=["EnergyReadings"], load_type="delta")
    assert changed.status is SyncStatus.SUCCESS, changed.error
    assert changed.streams[0].rows_written == 4
    assert landed(ws, full, "EnergyReadings", READING_COLUMNS) == cap_rows(cap, "EnergyReadings", READING_COLUMNS)

    nothing = sync(ws, "cap", tables=["EnergyReadings"], load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS and nothing.streams[0].rows_written == 0


@pytest.mark.parametrize("version", [4, 2])
def test_cap_text_and_composite_keys_in_many_small_chunks(ws, cap_readonly, version):
    add(ws, "cap", cap_readonly.url(CAP_PATHS[version]), password=True, chunk_size=5, page_size=2)
    result = sync(ws, "cap", tables=["Sites", "WaterUse"])
    assert result.status is SyncStatus.SUCCESS, result.error
    by_name = {s.stream: s for s in result.streams}
    assert by_name["WaterUse"].chunks_planned == 15 and by_name["WaterUse"].rows_written == 72
    assert by_name["Sites"].chunks_planned == 2  # keys with a quote and an umlaut among them
    water = ["site", "period", "cubicMeters", "modifiedAt"]
    assert landed(ws, result, "WaterUse", water) == cap_rows(cap_readonly, "WaterUse", water)
    sites = ["code", "name", "floorArea", "employees"]
    assert landed(ws, result, "Sites", sites) == cap_rows(cap_readonly, "Sites", sites)


def test_cap_server_driven_paging_is_followed(ws, cap_readonly):
    proxy = FaultProxy(cap_readonly.base)
    try:
        add(ws, "cap", proxy.base + CAP_PATHS[4], password=True, page_size=5000, chunk_size=50_000)
        result = sync(ws, "cap", tables=["EnergyReadings"])
    finally:
        proxy.close()
    assert result.status is SyncStatus.SUCCESS, result.error
    assert result.streams[0].rows_written == 3000
    # CAP answers at most 500 rows and a @odata.nextLink with a $skiptoken
    assert sum("skiptoken" in p for p in proxy.requests) >= 5
    assert landed(ws, result, "EnergyReadings", ["ID", "kWh"]) == cap_rows(cap_readonly, "EnergyReadings", ["ID", "kWh"])


def test_cap_v2_server_driven_paging_with_next_links(cap_readonly):
    spec = ConnectorSpec("sap_odata", "cap", {"service_url": cap_readonly.url(CAP_PATHS[2]), "username": CAP_USER,
                                              "page_size": 100_000}, password=CAP_PASSWORD)
    connector = create_connector(spec)
    try:
        info = connector.describe([StreamRef(None, "EnergyReadings")])[0]
        scope = ReadScope(columns=tuple(c.name for c in info.columns), key=("ID",))
        batches = list(connector.read(info.stream, scope, ChunkRange()))
    finally:
        connector.close()
    # one batch per page: __next links of 500 rows (the service's maximum)
    assert [b.num_rows for b in batches] == [500] * 6
    ids = [i for b in batches for i in b.column("ID").to_pylist()]
    assert ids == list(range(1, 3001))


def test_cap_a_failing_page_fails_only_its_chunk_and_is_retried_alone(ws, cap_readonly):
    broken = {"on": True}
    # every request of the second chunk (ID from 1001) fails, its first page and its retries
    proxy = FaultProxy(cap_readonly.base, fail=lambda path: broken["on"] and "ID%20ge%201001" in path and "EnergyReadings?" in path)
    try:
        add(ws, "cap", proxy.base + CAP_PATHS[4], password=True, chunk_size=1000, page_size=400)
        result = sync(ws, "cap", tables=["EnergyReadings"])
        assert result.status is SyncStatus.PARTIAL_SUCCESS
        stream = result.streams[0]
        assert stream.chunks_done == 2 and stream.chunks_failed == 1
        with ws.read() as conn:
            failed = [c for c in sync_records.ledger(conn, result.run_id) if c.status == "failed"]
        assert len(failed) == 1 and failed[0].attempts == 4  # the first try and 3 retries
        error = failed[0].error
        assert "page 1" in error and "HTTP 500" in error and "Injected failure" in error
        assert "URL: http://127.0.0.1:" in error and "ID ge 1001" in error
        assert len(proxy.failed) == 4

        broken["on"] = False
        again = sync(ws, "cap", retry_failed=True)
        assert again.status is SyncStatus.SUCCESS, again.error
        assert again.streams[0].rows_written == 1000
    finally:
        proxy.close()
    columns = ["ID", "kWh", "modifiedAt"]
    assert landed(ws, result, "EnergyReadings", columns) == cap_rows(cap_readonly, "EnergyReadings", columns)


def test_cap_validate_says_what_is_wrong(cap_readonly):
    def validate(url, password=CAP_PASSWORD, user=CAP_USER):
        connector = create_connector(ConnectorSpec("sap_odata", "cap", {"service_url": url, "username": user},
                                                   password=password))
        try:
            return connector.validate()
        finally:
            connector.close()

    assert validate(cap_readonly.url("/odata/v4/esg")).startswith("Connected. OData v4 service")
    assert "OData v2 service" in validate(cap_readonly.url("/odata/v2/esg/"))

    with pytest.raises(errors.AuthenticationFailed) as wrong:
        validate(cap_readonly.url("/odata/v4/esg"), password="wrong-password")
    assert wrong.value.code == "401" and "esg-reader" in wrong.value.message
    assert "wrong-password" not in wrong.value.describe()

    with pytest.raises(errors.AuthenticationFailed) as anonymous:
        validate(cap_readonly.url("/odata/v4/esg"), password=None, user=None)
    assert anonymous.value.code == "401"

    with pytest.raises(errors.DatabaseMissing) as missing:
        validate(cap_readonly.url("/odata/v4/no_such_service"))
    assert missing.value.code == "404" and "no OData service" in missing.value.message

    with pytest.raises(errors.DatabaseMissing) as root:
        validate(cap_readonly.url("/"))
    assert root.value.code == "404"

    # a web page (a portal's login page, say) that answers 200 to everything
    portal = FaultProxy(cap_readonly.base, fail=lambda _: True, status=200, body=b"<html><body>Sign in</body></html>",
                        content_type="text/html")
    try:
        with pytest.raises(errors.SourceError) as not_odata:
            validate(portal.base + "/portal/esg")
    finally:
        portal.close()
    assert "is not an OData service" in not_odata.value.message and "<html>" in not_odata.value.message

    closed = free_port()
    with pytest.raises(errors.SourceUnreachable) as unreachable:
        validate(f"http://127.0.0.1:{closed}/odata/v4/esg")
    assert "cannot be reached" in unreachable.value.message and "refused" in unreachable.value.message.lower()


# --- mock-sap: SAP-shaped OData v2 -------------------------------------------------------------


def bp_rows(service, columns):
    status, body = http("GET", service.url(f"{BP_SERVICE}/A_BusinessPartner?$format=json&$orderby=BusinessPartner"))
    assert status == 200
    rows = json.loads(body)["d"]["results"]
    out = []
    for r in rows:
        out.append(tuple(sap_odata.parse_moment(r[c]) if c.endswith("Date") else r[c] for c in columns))
    return out


def test_mock_sap_full_then_delta_by_change_date(ws, mock_sap):
    add(ws, "s4", mock_sap.url(BP_SERVICE), cursor_field="LastChangeDate", chunk_size=10, page_size=3, client="100")
    operations.discover_connector(ws, "s4")
    full = sync(ws, "s4", tables=["A_BusinessPartner"])
    assert full.status is SyncStatus.SUCCESS, full.error
    assert full.streams[0].rows_written == 24 and full.streams[0].chunks_planned == 3

    add(ws, "s4-all", mock_sap.url(BP_SERVICE), chunk_size=6, page_size=4)
    every = sync(ws, "s4-all")  # every entity set of the service, by key
    assert every.status is SyncStatus.SUCCESS, every.error
    counts = {s.stream: s.rows_written for s in every.streams}
    assert counts == {"A_BusinessPartner": 24, "A_BusinessPartnerAddress": 20, "A_BusinessPartnerBank": 9,
                      "A_BusinessPartnerRole": 16}  # composite keys among them
    columns = ["BusinessPartner", "BusinessPartnerFullName", "CreationDate", "LastChangeDate", "BusinessPartnerIsBlocked"]
    assert landed(ws, full, "A_BusinessPartner", columns) == bp_rows(mock_sap, columns)

    first = sync(ws, "s4", tables=["A_BusinessPartner"], load_type="delta")
    assert first.status is SyncStatus.SUCCESS, first.error
    tie = [r for r in bp_rows(mock_sap, columns) if r[3] == max(x[3] for x in bp_rows(mock_sap, columns))]
    assert first.streams[0].rows_written == len(tie)

    for partner in ("1000003", "1000017"):
        status, text = http("PATCH", mock_sap.url(f"{BP_SERVICE}/A_BusinessPartner('{partner}')"),
                            json.dumps({"BusinessPartnerFullName": f"Renamed O'Neil {partner}"}).encode())
        assert status in (200, 204), text
    changed = sync(ws, "s4", tables=["A_BusinessPartner"], load_type="delta")
    assert changed.status is SyncStatus.SUCCESS, changed.error
    assert changed.streams[0].rows_written == 2
    rows = landed(ws, full, "A_BusinessPartner", columns)
    assert rows == bp_rows(mock_sap, columns)
    assert rows[2][3].date() == dt.date.fromisoformat(MOCK_SAP_CLOCK[:10])  # the mock's clock

    nothing = sync(ws, "s4", tables=["A_BusinessPartner"], load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS and nothing.streams[0].rows_written == 0


def test_mock_sap_metadata_types_reach_arrow(mock_sap):
    spec = ConnectorSpec("sap_odata", "s4", {"service_url": mock_sap.url("/sap/opu/odata/sap/API_SALES_ORDER_SRV")})
    connector = create_connector(spec)
    try:
        info = {t.stream.table: t for t in connector.describe()}["A_SalesOrder"]
        amount = info.column("TotalNetAmount")
        assert amount.family == "decimal" and amount.type.startswith("Edm.Decimal(")
        assert info.column("CreationDate").family == "timestamp" and info.primary_key == ["SalesOrder"]
        scope = ReadScope(columns=("SalesOrder", "TotalNetAmount", "CreationDate"), key=("SalesOrder",))
        batch = next(iter(connector.read(info.stream, scope, ChunkRange())))
        assert str(batch.schema.field("TotalNetAmount").type).startswith("decimal128(")
        assert str(batch.schema.field("CreationDate").type) == "timestamp[us]"
        status, body = http("GET", mock_sap.url("/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder?$format=json"
                                                "&$orderby=SalesOrder&$top=1"))
        first = json.loads(body)["d"]["results"][0]
        assert batch.column("TotalNetAmount")[0].as_py() == Decimal(first["TotalNetAmount"])  # exact, no float
        sample = connector.sample(info.stream, 2)
        assert len(sample) == 2 and isinstance(sample[0]["TotalNetAmount"], str)
    finally:
        connector.close()


def test_mock_sap_authentication_and_authorization_errors(mock_sap_with_auth, mock_sap):
    def validate(service, password, path=BP_SERVICE):
        connector = create_connector(ConnectorSpec("sap_odata", "s4", {"service_url": service.url(path),
                                                                       "username": "esg-reader"}, password=password))
        try:
            return connector.validate()
        finally:
            connector.close()

    assert validate(mock_sap_with_auth, "esg-test-pw").startswith("Connected. OData v2 service")
    with pytest.raises(errors.AuthenticationFailed) as wrong:
        validate(mock_sap_with_auth, "nope")
    assert wrong.value.code == "401"

    # an authorization rule of the gateway: 403 on this service
    status, _ = http("POST", mock_sap.url("/_mock/faults"),
                     json.dumps({"match": "API_BUSINESS_PARTNER_SRV", "status": 403,
                                 "message": "No authorization to access service"}).encode())
    assert status == 201
    with pytest.raises(errors.PermissionDenied) as denied:
        validate(mock_sap, None)
    assert denied.value.code == "403" and "No authorization" in denied.value.message

    with pytest.raises(errors.DatabaseMissing) as missing:
        validate(mock_sap, None, path="/sap/opu/odata/sap/API_NO_SUCH_SRV")
    assert missing.value.code == "404"


def test_mock_sap_unavailable_gateway_is_transient(mock_sap):
    status, _ = http("POST", mock_sap.url("/_mock/faults"),
                     json.dumps({"match": "A_BusinessPartner", "status": 503, "count": 1}).encode())
    assert status == 201
    connector = create_connector(ConnectorSpec("sap_odata", "s4", {"service_url": mock_sap.url(BP_SERVICE)}))
    try:
        scope = ReadScope(columns=("BusinessPartner",), key=("BusinessPartner",))
        with pytest.raises(errors.TransientSourceError) as busy:
            list(connector.read(StreamRef(None, "A_BusinessPartner"), scope, ChunkRange()))
        assert busy.value.code == "503" and "page 1" in busy.value.message
        assert len(list(connector.read(StreamRef(None, "A_BusinessPartner"), scope, ChunkRange()))) == 1
    finally:
        connector.close()


# --- OData without a server: literals, filters, metadata, values ---------------------------------


def _prop(name, edm, **kw):
    return sap_odata.Property(name, edm, **kw)


@pytest.mark.parametrize("edm, value, v2, v4", [
    ("Edm.String", "O'Brien's", "'O''Brien''s'", "'O''Brien''s'"),
    ("Edm.Int32", 42, "42", "42"),
    ("Edm.Int64", 10_000_000_000, "10000000000L", "10000000000"),
    ("Edm.Decimal", Decimal("12.340"), "12.340M", "12.340"),
    ("Edm.Decimal", Decimal("1E+3"), "1000M", "1000"),
    ("Edm.Double", 1.5, "1.5d", "1.5"),
    ("Edm.Boolean", True, "true", "true"),
    ("Edm.Guid", "0050568d-393c-1ed4-9d97-e65f0f3fcc23", "guid'0050568d-393c-1ed4-9d97-e65f0f3fcc23'",
     "0050568d-393c-1ed4-9d97-e65f0f3fcc23"),
    ("Edm.DateTime", dt.datetime(2024, 3, 1, 10, 0), "datetime'2024-03-01T10:00:00'", "datetime'2024-03-01T10:00:00'"),
    ("Edm.DateTimeOffset", dt.datetime(2024, 3, 1, 12, 0, 0, 1500, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     "datetimeoffset'2024-03-01T10:00:00.0015Z'", "2024-03-01T10:00:00.0015Z"),
    ("Edm.Date", dt.date(2024, 3, 1), "2024-03-01", "2024-03-01"),
    ("Edm.Time", dt.time(10, 30, 5), "time'PT10H30M5S'", "10:30:05"),
    ("Edm.Binary", b"\x00\xff", "binary'00FF'", "binary'AP8='"),
])
def test_filter_literals_per_version(edm, value, v2, v4):
    prop = _prop("p", edm)
    assert sap_odata.literal(prop, value, 2) == v2
    if edm != "Edm.DateTime":  # no such type in v4
        assert sap_odata.literal(prop, value, 4) == v4


def _offline(version=4, page_size=100):
    connector = sap_odata.ODataConnector(ConnectorSpec("sap_odata", "x", {
        "service_url": "https://user:secret@s4.example:44300/sap/opu/odata/sap/ZESG_SRV?sap-language=EN",
        "client": "100", "page_size": page_size}))
    props = [_prop("Plant", "Edm.String", nullable=False), _prop("ID", "Edm.Int64", nullable=False),
             _prop("ChangedAt", "Edm.DateTimeOffset"), _prop("Qty", "Edm.Decimal", precision=13, scale=3)]
    connector._model = sap_odata.ServiceModel(version, {
        "Readings": sap_odata.EntitySet("Readings", "Z.Reading", props, ["Plant", "ID"])})
    return connector


def test_delta_filter_is_the_expanded_tuple_and_url_is_encoded():
    connector = _offline(version=2)
    es = connector.model.entity_sets["Readings"]
    at = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
    scope = ReadScope(columns=("Plant", "ID", "ChangedAt", "Qty"), key=("ChangedAt", "Plant", "ID"),
                      after=(at, "O'Hare", 7), cursor_field="ChangedAt",
                      cursor_max=dt.datetime(2024, 3, 9, 0, 0, 0, 123000, tzinfo=dt.timezone.utc))
    conds, key = connector._conditions(es, scope, ChunkRange(upper=(dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc),)))
    ts = "datetimeoffset'2024-03-01T10:00:00Z'"
    assert conds == [
        "ChangedAt ne null",
        f"ChangedAt gt {ts} or (ChangedAt eq {ts} and Plant gt 'O''Hare' or (Plant eq 'O''Hare' and ID gt 7L))",
        "ChangedAt le datetimeoffset'2024-03-09T00:00:00.123Z'",
        "ChangedAt lt datetimeoffset'2024-03-05T00:00:00Z'",
    ]
    url = connector.url("Readings", connector._params(es, ["ID", "Qty"], filters=conds, orderby=key, top=100))
    assert url.startswith("https://s4.example:44300/sap/opu/odata/sap/ZESG_SRV/Readings?sap-language=EN&sap-client=100&")
    assert "secret" not in url and "+" not in url and " " not in url
    assert "$filter=ChangedAt%20ne%20null%20and%20(ChangedAt%20gt%20datetimeoffset'2024-03-01T10:00:00Z'" in url
    assert "$orderby=ChangedAt,Plant,ID" in url and "$top=100" in url and "$format=json" in url
    assert "$select=ID,Qty" in url


def test_next_links_stay_on_the_configured_origin_and_keep_the_client():
    connector = _offline()
    link = connector._rebase("http://internal-gw:8000/sap/opu/odata/sap/ZESG_SRV/Readings?$skiptoken=500",
                             connector.url("Readings"))
    assert link == "https://s4.example:44300/sap/opu/odata/sap/ZESG_SRV/Readings?$skiptoken=500&sap-client=100"
    relative = connector._rebase("Readings?$skiptoken=1000&sap-client=100", connector.url("Readings"))
    assert relative == "https://s4.example:44300/sap/opu/odata/sap/ZESG_SRV/Readings?$skiptoken=1000&sap-client=100"


class _FakeResponse:
    def __init__(self, payload):
        self.status_code = 200
        self.content = json.dumps(payload).encode()
        self.headers = {"Content-Type": "application/json"}


class _FakeSession:
    """Answers v4 pages of `rows` for $top/$skip requests; records the URLs."""

    def __init__(self, rows):
        self.rows = rows
        self.urls: list[str] = []

    def get(self, url, headers=None, timeout=None):
        self.urls.append(url)
        query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
        skip, top = int(query.get("$skip", 0)), int(query["$top"])
        return _FakeResponse({"value": self.rows[skip:skip + min(top, 2)]})  # the server caps pages at 2, silently

    def close(self):
        pass


def test_unfilterable_keys_are_paged_with_skip_until_an_empty_page():
    connector = _offline(version=4, page_size=3)
    es = connector.model.entity_sets["Readings"]
    connector._model.entity_sets["Readings"] = sap_odata.EntitySet(
        "Readings", es.type_name, [sap_odata.Property("Plant", "Edm.String", filterable=False), *es.properties[1:]],
        es.key)
    rows = [{"Plant": f"P{i}", "ID": i, "ChangedAt": None, "Qty": "1.5"} for i in range(7)]
    connector._session = _FakeSession(rows)
    scope = ReadScope(columns=("Plant", "ID", "Qty"), key=("Plant", "ID"))
    batches = list(connector.read(StreamRef(None, "Readings"), scope, ChunkRange()))
    assert [b.num_rows for b in batches] == [2, 2, 2, 1]
    assert [r["ID"] for b in batches for r in b.to_pylist()] == list(range(7))
    skips = [re.search(r"\$skip=(\d+)", u) for u in connector._session.urls]
    assert [int(m.group(1)) if m else 0 for m in skips] == [0, 2, 4, 6, 7]
    assert all("$filter" not in u and "$orderby=Plant,ID" in u for u in connector._session.urls)


def test_metadata_inheritance_aliases_and_unfilterable_keys():
    doc = b"""<?xml version="1.0"?>
    <edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"
      xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" xmlns:sap="http://www.sap.com/Protocols/SAPData">
     <edmx:DataServices m:DataServiceVersion="2.0">
      <Schema Namespace="ZESG" Alias="Z" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">
       <EntityType Name="Base"><Key><PropertyRef Name="Id"/></Key>
        <Property Name="Id" Type="Edm.Guid" Nullable="false"/></EntityType>
       <EntityType Name="Reading" BaseType="Z.Base">
        <Property Name="Day" Type="Edm.DateTime" sap:display-format="Date"/>
        <Property Name="Amount" Type="Edm.Decimal" Precision="15" Scale="2"/>
        <Property Name="Address" Type="ZESG.CT_Address"/>
        <NavigationProperty Name="to_Plant" Relationship="Z.x" FromRole="a" ToRole="b"/></EntityType>
       <EntityType Name="Log"><Key><PropertyRef Name="No"/></Key>
        <Property Name="No" Type="Edm.String" sap:filterable="false"/></EntityType>
       <ComplexType Name="CT_Address"><Property Name="City" Type="Edm.String"/></ComplexType>
       <EntityContainer Name="C" m:IsDefaultEntityContainer="true">
        <EntitySet Name="Readings" EntityType="Z.Reading"/>
        <EntitySet Name="Logs" EntityType="ZESG.Log"/>
        <EntitySet Name="ValueHelp" EntityType="ZESG.Log" sap:addressable="false"/>
       </EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"""
    model = sap_odata.parse_metadata(doc)
    assert model.version == 2 and sorted(model.entity_sets) == ["Logs", "Readings"]
    readings = model.entity_sets["Readings"]
    assert readings.key == ["Id"] and [p.name for p in readings.properties] == ["Id", "Day", "Amount", "Address"]
    assert [str(sap_odata.arrow_type(p)) for p in readings.properties] == ["string", "date32[day]", "decimal128(15, 2)", "string"]
    assert [sap_odata.family(p) for p in readings.properties] == ["text", "date", "decimal", "json"]
    assert readings.keyset_paging and not model.entity_sets["Logs"].keyset_paging
    with pytest.raises(ValueError):
        sap_odata.parse_metadata(b"<html><body>Login</body></html>")


def test_wire_values_become_typed_python_values():
    convert = lambda edm, value, **kw: sap_odata.value_converter(_prop("p", edm, **kw))(value)  # noqa: E731
    utc = dt.timezone.utc
    assert convert("Edm.DateTime", "/Date(1704067200000)/") == dt.datetime(2024, 1, 1)
    assert convert("Edm.DateTimeOffset", "/Date(1704067200123+0060)/") == dt.datetime(2024, 1, 1, 0, 0, 0, 123000, utc)
    assert convert("Edm.DateTimeOffset", "2024-01-01T01:00:00.1234567+01:00") == dt.datetime(2024, 1, 1, 0, 0, 0, 123456, utc)
    assert convert("Edm.DateTime", "/Date(1704153600000)/", date_only=True) == dt.date(2024, 1, 2)
    assert convert("Edm.Time", "PT10H30M15S") == dt.time(10, 30, 15)
    assert convert("Edm.TimeOfDay", "10:30:15.250") == dt.time(10, 30, 15, 250000)
    assert convert("Edm.Int64", "10000000000") == 10_000_000_000
    assert convert("Edm.Decimal", Decimal("0.1"), precision=5, scale=3) == Decimal("0.100")
    assert convert("Edm.Decimal", "123991.820", precision=15, scale=3) == Decimal("123991.820")
    assert convert("Edm.Binary", "AP8=") == b"\x00\xff"
    assert json.loads(convert("ZESG.CT_Address", {"__metadata": {"type": "x"}, "City": "Zürich"})) == {"City": "Zürich"}


# --- SAP HANA SQL (no server here) ----------------------------------------------------------------


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def one(self):
        return self.rows[0]

    def all(self):
        return self.rows

    fetchall = all

    def __iter__(self):
        return iter(self.rows)


class _RecordingEngine:
    """Stands in for an engine: records each query as the HANA dialect renders it."""

    def __init__(self, dialect):
        self.dialect = dialect
        self.queries: list[str] = []
        self.answers: list[list[tuple]] = []

    def connect(self):
        engine = self

        class _Conn:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, query, params=None):
                engine.queries.append(str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
                return _Result(engine.answers.pop(0) if engine.answers else [(None, None, 0)])

        return _Conn()

    def dispose(self):
        pass


HANA_TABLE = StreamRef("SAPHANADB", '/BIC/AZ"ESG')


def _hana(**options):
    pytest.importorskip("sqlalchemy_hana")
    spec = ConnectorSpec("sap_hana", "hana", {"host": "127.0.0.1", "port": 30015, "username": "ESG",
                                              "schema": "SAPHANADB", **options}, password="not-a-real-password")
    connector = create_connector(spec)
    dialect = sa.create_engine(connector.sqlalchemy_url(), **connector.engine_options()).dialect
    connector._engine = _RecordingEngine(dialect)
    stream = StreamRef(connector.schema, HANA_TABLE.table)
    connector._tables[stream] = TableInfo(stream=stream, columns=[
        ColumnInfo("id", "INTEGER", False, True, "integer"),
        ColumnInfo("Plant Code", "NVARCHAR(10)", True, False, "text"),
        ColumnInfo("kwh", "DECIMAL(12, 3)", True, False, "decimal"),
        ColumnInfo("changed_at", "TIMESTAMP", True, False, "timestamp"),
        ColumnInfo("raw", "VARBINARY(16)", True, False, "binary"),
    ], primary_key=["id"])
    return connector, stream


def test_hana_read_query_quotes_names_and_expands_key_bounds():
    connector, stream = _hana()
    assert connector.schema == "saphanadb"  # SAPHANADB, unquoted (HANA folds it to upper case)
    scope = ReadScope(columns=("id", "Plant Code", "kwh", "changed_at"), key=("changed_at", "id"),
                      after=(dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), 41),
                      cursor_field="changed_at", cursor_max=dt.datetime(2024, 3, 9, 23, 59, 59, 999999))
    sql = " ".join(connector.read_sql(stream, scope, ChunkRange(lower=(dt.datetime(2024, 3, 2),), upper=("O'x", 7))).split())
    t = 'saphanadb."/BIC/AZ""ESG"'
    assert f"SELECT {t}.id, {t}.\"Plant Code\", {t}.kwh, {t}.changed_at FROM {t} WHERE" in sql
    assert (f"({t}.changed_at > TO_TIMESTAMP('2024-03-01 10:00:00.000000') OR "
            f"{t}.changed_at = TO_TIMESTAMP('2024-03-01 10:00:00.000000') AND {t}.id > 41)") in sql  # in UTC
    assert f"{t}.changed_at < ADD_NANO100(TO_TIMESTAMP('2024-03-09 23:59:59.999999'), 10)" in sql
    assert f"{t}.changed_at >= TO_TIMESTAMP('2024-03-02 00:00:00.000000')" in sql
    assert f"({t}.changed_at < N'O''x' OR {t}.changed_at = N'O''x' AND {t}.id < 7)" in sql
    assert f"{t}.changed_at IS NOT NULL" in sql and sql.endswith(f"ORDER BY {t}.changed_at, {t}.id")
    where = sql.split("WHERE", 1)[1]
    assert not re.search(r"\(\s*[\w.\"]+\s*,\s*[\w.\"]+\s*\)\s*[<>]", where), "row-value comparison"


def test_hana_planning_queries_use_mod_limit_and_hana_date_functions():
    connector, stream = _hana()
    scope = ReadScope(columns=("id", "kwh"), key=("id",))
    connector._engine.answers = [[(5000,), (10000,)]]
    assert connector.boundaries(stream, scope, 5000) == [(5000,), (10000,)]
    assert "MOD(anon_1._rn - 1, 5000) = 0" in connector._engine.queries[-1]
    assert "row_number() OVER (ORDER BY" in connector._engine.queries[-1]
    assert "%" not in connector._engine.queries[-1]

    connector._engine.answers = [[(1, "A", Decimal("1.000"), None, b"\x01")]]
    connector.sample(stream, 10)
    assert connector._engine.queries[-1].rstrip().endswith("LIMIT 10")

    windows = {}
    for window in ("day", "week", "month"):
        connector._engine.answers = [[(dt.date(2024, 3, 1), 3)]]
        delta = ReadScope(columns=("id",), key=("changed_at", "id"), cursor_field="changed_at")
        assert connector.window_counts(stream, delta, window) == [(dt.date(2024, 3, 1), 3)]
        windows[window] = " ".join(connector._engine.queries[-1].split())
    column = 'saphanadb."/BIC/AZ""ESG".changed_at'
    assert f"TO_DATE({column}) AS _w" in windows["day"]
    assert f"ADD_DAYS(TO_DATE({column}), -WEEKDAY({column})) AS _w" in windows["week"]
    assert f"ADD_DAYS(TO_DATE({column}), 1 - DAYOFMONTH({column})) AS _w" in windows["month"]
    assert all("date_trunc" not in q for q in windows.values())

    binary = ReadScope(columns=("id",), key=("raw", "id"), after=(b"\x00\xff", 3))
    assert "X'00FF'" in connector.read_sql(stream, binary, ChunkRange())


def test_hana_rows_become_typed_arrow_batches():
    from esg_workbench.connectors.sap_hana import rows_to_batch

    connector, stream = _hana()
    schema = connector.arrow_schema(stream, ["id", "Plant Code", "kwh", "changed_at", "raw"])
    assert [str(f.type) for f in schema] == ["int32", "string", "decimal128(12, 3)", "timestamp[us]", "binary"]

    class Lob:
        def read(self):
            return b"lob"

    batch = rows_to_batch([(1, "Zürich", Decimal("1.5"), dt.datetime(2024, 1, 1, 1, 2, 3, 4), memoryview(b"\x01")),
                           (2, None, None, None, Lob())], schema)
    assert batch.to_pylist() == [
        {"id": 1, "Plant Code": "Zürich", "kwh": Decimal("1.500"), "changed_at": dt.datetime(2024, 1, 1, 1, 2, 3, 4),
         "raw": b"\x01"},
        {"id": 2, "Plant Code": None, "kwh": None, "changed_at": None, "raw": b"lob"},
    ]


def test_hana_closed_port_and_driver_error_codes():
    hdbcli = pytest.importorskip("hdbcli.dbapi")
    port = free_port()
    connector = create_connector(ConnectorSpec("sap_hana", "hana", {"host": "127.0.0.1", "port": port,
                                                                    "username": "ESG"}, password="not-a-real-password"))
    with pytest.raises(errors.SourceUnreachable) as refused:
        connector.validate()
    assert refused.value.code == "-10709" and "connection refused" in refused.value.message
    assert refused.value.transient and "not-a-real-password" not in refused.value.describe()

    connector, _ = _hana()
    cases = [
        (10, "authentication failed", errors.AuthenticationFailed),
        (258, "insufficient privilege: Not authorized", errors.PermissionDenied),
        (259, 'invalid table name:  Could not find table/view AZESG in schema SAPHANADB', errors.TableMissing),
        (260, "invalid column name: KWH", errors.SchemaDrift),
        (362, "invalid schema name: SAPHANADB", errors.DatabaseMissing),
        (133, "transaction rolled back by detected deadlock", errors.TransientSourceError),
        (-10807, "Connection lost (RTE:[89006] System call 'recv' failed, rc=104:Connection reset by peer)",
         errors.TransientSourceError),
        (4321, "only secure connections are allowed", errors.SourceError),
    ]
    for code, text, expected in cases:
        error = connector.translate_error(hdbcli.Error(code, text), "Reading")
        assert type(error) is expected, (code, error)
        assert error.code == str(code)
    assert "encrypt=yes" in connector.translate_error(hdbcli.Error(4321, "only secure connections are allowed"), "x").hint


def test_hana_connection_options():
    cloud = create_connector(ConnectorSpec("sap_hana", "h", {"host": "abc.hana.prod-eu10.hanacloud.ondemand.com",
                                                             "username": "ESG"}, password="pw"))
    assert cloud.sqlalchemy_url().port == 443
    assert cloud.engine_options()["connect_args"] == {"connectTimeout": 15000, "encrypt": True,
                                                      "sslValidateCertificate": True}
    onprem = create_connector(ConnectorSpec("sap_hana", "h", {"host": "hana", "port": 30041, "database": "HXE",
                                                              "username": "ESG"}, password="pw"))
    assert onprem.sqlalchemy_url().database == "HXE"
    assert onprem.engine_options()["connect_args"]["encrypt"] is False


def test_sap_types_are_registered_with_their_options():
    from esg_workbench.connectors.registry import TYPE_OPTIONS, connector_types

    assert {"sap_odata", "sap_hana"} <= set(connector_types())
    assert TYPE_OPTIONS["sap_odata"][:4] == ("service_url", "username", "client", "verify_tls")
    assert "schema" in TYPE_OPTIONS["sap_hana"]
    with pytest.raises(errors.ConfigError):
        create_connector(ConnectorSpec("sap_odata", "x", {}))
    with pytest.raises(errors.ConfigError):
        create_connector(ConnectorSpec("sap_odata", "x", {"service_url": "ftp://x/y"}))
