"""Query metrics (issue 6 item 8): definitions on a hand-made study, one query walked through the
lifecycle, the API (scoped, one error shape), and the numbers of clindata's imported historical
queries against pandas computed straight from its parquet table (the demo subset always, the full
42,259 queries from ../shared/data)."""

import datetime
import time
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings
from django.db import connection

from queries import lifecycle
from queries.metrics import query_metrics
from queries.models import Query, QueryMessage
from studies.ingest.clindata import TABLES, clindata_import, read_tables
from studies.models import Import, Role
from studies.services import cra_site_assign, membership_grant
from tests.factories import (
    DataPointFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
)
from tests.scoping import build_world

pytestmark = pytest.mark.django_db

DEMO = Path(settings.BASE_DIR) / "data" / "demo" / "clindata"
METRICS_URL = "/api/v1/query-metrics/"
CLINDATA_EXTRACTED = datetime.date(2019, 10, 26)  # clindata's dataextractiondate
UTC = datetime.UTC


def at(day: str, hour: int = 0) -> datetime.datetime:
    return datetime.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.fixture
def small_study():
    """Nine queries at a UTC site (101) and a Tokyo site (201), one per case of the definitions."""
    study = StudyFactory(protocol_id="MET-1")
    paris = SiteFactory(study=study, number="101", timezone="UTC")
    tokyo = SiteFactory(study=study, number="201", timezone="Asia/Tokyo")
    a, b = SubjectFactory(site=paris, subject_id="101-001"), SubjectFactory(site=tokyo, subject_id="201-001")

    def query(subject, state, created, **fields):
        return Query.objects.create(study=study, site=subject.site, subject=subject, state=state,
                                    created_at=at(created), text="Please verify against source.", **fields)

    query(a, "open", "2025-03-29", origin="rule", rule_code="RNG-SYSBP", due_date=datetime.date(2025, 4, 5))
    query(a, "open", "2025-03-20", due_date=datetime.date(2025, 3, 25))  # open past its due date
    query(a, "answered", "2025-03-10", origin="rule", rule_code="RNG-SYSBP", answered_at=at("2025-03-12"),
          due_date=datetime.date(2025, 3, 15))
    # Released ten days after its creation; answered 2025-01-14 16:00 UTC, already the 15th in Tokyo
    query(b, "answered", "2025-01-01", origin="rule", rule_code="VISIT-WINDOW", recipient="cra",
          released_at=at("2025-01-11"), answered_at=at("2025-01-14", 16), due_date=datetime.date(2025, 1, 14))
    requeried = query(a, "closed", "2025-02-01", answered_at=at("2025-02-03"), closed_at=at("2025-02-06"),
                      due_date=datetime.date(2025, 2, 10))
    QueryMessage.objects.create(query=requeried, kind=QueryMessage.Kind.REQUERY, text="Please check again.")
    query(b, "closed", "2025-02-01", origin="rule", rule_code="RNG-SYSBP", closed_at=at("2025-02-11"),
          due_date=datetime.date(2025, 2, 5))  # closed after its due date, never answered
    query(a, "cancelled", "2025-03-01")
    query(a, "candidate", "2025-03-30", origin="rule", rule_code="LAB-ALT")
    query(a, "closed", "2024-12-01", origin="imported", rule_code="EDC: System Query", closed_at=at("2024-12-06"))
    return study


def test_metrics_follow_their_definitions(small_study):
    metrics = query_metrics(queries=Query.objects.filter(study=small_study), today=datetime.date(2025, 3, 31))

    assert metrics["total"] == 9
    assert metrics["states"] == {"candidate": 1, "open": 2, "answered": 2, "closed": 3, "cancelled": 1}
    assert metrics["aging"] == [{"bucket": "0-7", "open": 1, "answered": 0, "total": 1},
                                {"bucket": "8-14", "open": 1, "answered": 0, "total": 1},
                                {"bucket": "15-30", "open": 0, "answered": 1, "total": 1},
                                {"bucket": ">30", "open": 0, "answered": 1, "total": 1}]
    # answered in 2, 3.67 (from the release) and 2 days; closed in 5, 10 and 5 days
    assert metrics["overall"] == {"queries": 9, "outstanding": 4, "answered": 3, "median_days_to_answer": 2.0,
                                  "closed": 3, "median_days_to_close": 5.0}
    assert metrics["by_site"] == [
        {"site": "101", "queries": 7, "outstanding": 3, "answered": 2, "median_days_to_answer": 2.0, "closed": 2,
         "median_days_to_close": 5.0},
        {"site": "201", "queries": 2, "outstanding": 1, "answered": 1, "median_days_to_answer": 3.7, "closed": 1,
         "median_days_to_close": 10.0}]
    rules = {row["rule"]: row for row in metrics["by_rule"]}
    assert set(rules) == {"(manual)", "RNG-SYSBP", "VISIT-WINDOW", "LAB-ALT", "EDC: System Query"}
    assert rules["RNG-SYSBP"] == {"rule": "RNG-SYSBP", "queries": 3, "outstanding": 2, "answered": 1,
                                  "median_days_to_answer": 2.0, "closed": 1, "median_days_to_close": 10.0}
    assert [(r["recipient"], r["queries"]) for r in metrics["by_recipient"]] == [("cra", 1), ("site", 8)]
    # Breached: open past due; answered on the 15th in Tokyo (the 14th in UTC); closed late unanswered
    assert metrics["sla"] == {"with_due_date": 6, "without_due_date": 1, "breached": 3, "breach_rate": 0.5}
    assert metrics["requery"] == {"queries": 6, "requeried": 1, "imported_without_thread": 1, "rate": 0.1667}


def test_metrics_of_no_queries_are_empty_not_an_error():
    metrics = query_metrics(queries=Query.objects.none(), today=datetime.date(2025, 1, 1))
    assert metrics["total"] == 0 and metrics["by_site"] == [] and metrics["sla"]["breach_rate"] is None
    assert metrics["overall"]["median_days_to_close"] is None and metrics["requery"]["rate"] is None


def test_a_query_walked_through_the_lifecycle_counts_its_requery():
    study = StudyFactory()
    site = SiteFactory(study=study, number="101")
    subject = SubjectFactory(site=site)
    cra, coordinator = UserFactory(username="cra"), UserFactory(username="coord")
    membership_grant(user=cra, study=study, role=Role.CRA)
    cra_site_assign(cra=cra, site=site)
    membership_grant(user=coordinator, study=study, role=Role.SITE_COORDINATOR, site=site)

    point = DataPointFactory(visit=SubjectVisitFactory(subject=subject), raw_value="210")
    text = (f"{point.item.label} ({point.item.oid}) at {point.visit.definition.name}: the recorded value is "
            f"210 {point.item.units}. Please verify it against the source document.")
    query = lifecycle.query_create(actor=cra, study=study, subject=subject, data_point=point, text=text)
    query = lifecycle.query_answer(query=query, actor=coordinator, text="Verified against source.")
    query = lifecycle.query_requery(query=query, actor=cra, text=text.replace("Please verify", "Please check"))
    query = lifecycle.query_answer(query=query, actor=coordinator, text="The log says the same.")
    lifecycle.query_close(query=query, actor=cra, reason="Confirmed against source")

    metrics = query_metrics(queries=Query.objects.filter(study=study))
    assert metrics["states"]["closed"] == 1
    assert metrics["requery"] == {"queries": 1, "requeried": 1, "imported_without_thread": 0, "rate": 1.0}
    assert metrics["overall"]["answered"] == 1 and metrics["overall"]["closed"] == 1
    assert metrics["sla"]["with_due_date"] == 1 and metrics["sla"]["breached"] == 0


def test_the_api_answers_the_metrics_of_the_users_scope(client):
    world = build_world()
    study = world.studies["A"]
    client.force_login(world.users[Role.DATA_MANAGER])
    response = client.get(METRICS_URL, {"study": study.pk, "as_of": "2025-01-31"})
    assert response.status_code == 200
    body = response.json()
    assert body["study"] == study.pk and body["as_of"] == "2025-01-31" and body["total"] == 2
    assert {"states", "aging", "overall", "by_site", "by_rule", "by_recipient", "sla", "requery"} <= set(body)

    client.force_login(world.users[Role.SITE_COORDINATOR])  # site A1 only
    body = client.get(METRICS_URL, {"study": study.pk}).json()
    assert body["total"] == 1 and [row["site"] for row in body["by_site"]] == [world.sites["A1"].site.number]


def test_the_api_refuses_with_the_error_shape(client):
    world = build_world()
    assert client.get(METRICS_URL, {"study": world.studies["A"].pk}).status_code == 401
    client.force_login(world.users[Role.SITE_COORDINATOR])
    missing = client.get(METRICS_URL)
    assert missing.status_code == 400 and set(missing.json()) == {"message", "extra"}
    assert client.get(METRICS_URL, {"study": world.studies["A"].pk, "as_of": "31/01/2025"}).status_code == 400
    other = client.get(METRICS_URL, {"study": world.studies["B"].pk})  # a study the user is not in
    assert other.status_code == 404 and other.json()["message"] == "No such study."


# -- clindata --------------------------------------------------------------------------------

def import_queries_only(source: Path, out: Path):
    """clindata through its importer, with the tables the queries need (study, sites, subjects,
    queries) and the others emptied: the queries of the full study in seconds, not minutes."""
    keep = {"ctms_study", "ctms_site", "rawplus_dm", "rawplus_enroll", "edc_queries"}
    for name, frame in read_tables(source, all_columns=True).items():
        (frame if name in keep else frame.iloc[0:0]).reset_index(drop=True).to_parquet(out / f"{name}.parquet")
    assert set(TABLES) == {p.stem for p in out.glob("*.parquet")}
    record = clindata_import(directory=out, actor=UserFactory(username="importer"))
    assert record.status == Import.Status.SUCCEEDED, record.errors
    return record.study


def reference(source: Path) -> pd.DataFrame:
    """edc_queries straight from the parquet, with its site and days to answer and to close."""
    frame = pd.read_parquet(source / "edc_queries.parquet")
    dm = pd.read_parquet(source / "rawplus_dm.parquet")
    frame["site"] = frame["subjectname"].map(dm.set_index("subject_nsv")["siteid"]).astype(str)
    for column in ("created", "answered", "resolved"):
        frame[column] = pd.to_datetime(frame[column])
    frame["to_answer"] = (frame["answered"] - frame["created"]).dt.days
    frame["to_close"] = (frame["resolved"] - frame["created"]).dt.days.where(frame["querystatus"] == "Closed")
    return frame


def assert_matches_reference(metrics: dict, frame: pd.DataFrame) -> None:
    assert metrics["total"] == len(frame)
    states = frame["querystatus"].str.lower().value_counts().to_dict()
    assert {k: v for k, v in metrics["states"].items() if v} == states
    assert metrics["overall"]["median_days_to_close"] == frame["to_close"].median()
    assert metrics["overall"]["median_days_to_answer"] == frame["to_answer"].median()
    assert metrics["overall"]["closed"] == states["closed"] and metrics["overall"]["answered"] == states["answered"]

    outstanding = frame[frame["querystatus"].isin(["Open", "Answered"])]
    age = (pd.Timestamp(CLINDATA_EXTRACTED) - outstanding["created"]).dt.days.clip(lower=0)
    buckets = pd.cut(age, [-1, 7, 14, 30, float("inf")], labels=["0-7", "8-14", "15-30", ">30"])
    assert {b["bucket"]: b["total"] for b in metrics["aging"]} == buckets.value_counts().to_dict()

    per_site = frame.groupby("site").agg(queries=("querystatus", "size"), median_close=("to_close", "median"))
    assert {r["site"]: (r["queries"], r["median_days_to_close"]) for r in metrics["by_site"]} == {
        site: (row.queries, None if pd.isna(row.median_close) else row.median_close)
        for site, row in per_site.iterrows()}
    per_group = frame.groupby("markinggroup")["to_close"].median()
    assert {r["rule"]: r["median_days_to_close"] for r in metrics["by_rule"]} == {
        f"EDC: {group}": median for group, median in per_group.items()}
    # The EDC kept no due dates and no threads: said so, not counted as zero breaches or re-queries
    assert metrics["sla"] == {"with_due_date": 0, "without_due_date": len(frame), "breached": 0, "breach_rate": None}
    assert metrics["requery"] == {"queries": 0, "requeried": 0, "imported_without_thread": len(frame), "rate": None}


def test_the_demo_subset_of_clindata_gives_the_numbers_pandas_gives(tmp_path):
    study = import_queries_only(DEMO, tmp_path)
    metrics = query_metrics(queries=Query.objects.filter(study=study), today=CLINDATA_EXTRACTED)
    assert metrics["states"]["closed"] == 2623 and metrics["states"]["answered"] == 3
    assert_matches_reference(metrics, reference(DEMO))


def test_the_42259_historical_queries_of_clindata_give_the_numbers_pandas_gives(shared_data, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the full clindata runs on PostgreSQL in CI")
    source = shared_data / "clindata" / "parquet"
    study = import_queries_only(source, tmp_path)
    started = time.perf_counter()
    metrics = query_metrics(queries=Query.objects.filter(study=study), today=CLINDATA_EXTRACTED)
    seconds = time.perf_counter() - started
    assert (metrics["total"], metrics["states"]["closed"], metrics["states"]["answered"],
            metrics["states"]["open"]) == (42259, 42095, 97, 67)
    assert metrics["overall"]["median_days_to_close"] == 5.0 and len(metrics["by_site"]) == 176
    assert_matches_reference(metrics, reference(source))
    assert seconds < 5, f"metrics of 42,259 queries took {seconds:.1f} s"
