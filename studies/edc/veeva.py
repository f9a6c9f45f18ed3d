"""Veeva Vault CDMS through its REST API (httpx): POST /api/{version}/auth with username and
password gives a sessionId, sent as the Authorization header of the JSON calls that follow. Every
Vault answer carries responseStatus; anything but SUCCESS is an error.

The CDMS resources used (relative to /api/{version}/app/cdm): studies/{study}/forms (metadata),
studies/{study}/data?modified_date__gt= (values changed since), queries (POST to raise, GET to list)."""

from datetime import UTC, datetime

import httpx

from studies.edc.base import EdcAdapter, EdcError, FieldDef, FlatValue, OutboundQuery, QueryState, edc_secret
from studies.models import Import

API_VERSION = "v24.1"
_STATES = {"open": "open", "answered": "answered", "closed": "closed", "cancelled": "cancelled"}


class VeevaAdapter(EdcAdapter):
    source = Import.Source.VEEVA

    def __init__(self, connection):
        super().__init__(connection)
        self.api = f"{connection.base_url.rstrip('/')}/api/{API_VERSION}"
        self._session_id: str | None = None

    def _request(self, what: str, method: str, path: str, **kwargs) -> dict:
        try:
            with httpx.Client(timeout=self.timeout) as client:
                response = client.request(method, f"{self.api}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise self.fail(what, exc, transient=True) from None
        if response.status_code >= 500:
            raise self.fail(what, EdcError(f"HTTP {response.status_code}"), transient=True)
        try:
            body = response.json()
        except ValueError:
            raise self.fail(what, EdcError(f"HTTP {response.status_code}, not JSON")) from None
        if body.get("responseStatus") != "SUCCESS":
            errors = "; ".join(f"{e.get('type')}: {e.get('message')}" for e in body.get("errors") or [])
            raise self.fail(what, EdcError(errors or f"HTTP {response.status_code}"))
        return body

    def _session(self) -> str:
        if self._session_id is None:
            body = self._request("authenticating", "POST", "/auth", data={
                "username": edc_secret(self.connection, "USERNAME"),
                "password": edc_secret(self.connection, "PASSWORD")})
            self._session_id = body["sessionId"]
        return self._session_id

    def _get(self, what: str, path: str, **params) -> dict:
        return self._request(what, "GET", f"/app/cdm{path}", params=params,
                             headers={"Authorization": self._session(), "Accept": "application/json"})

    def pull_metadata(self) -> list[FieldDef]:
        body = self._get("reading forms", f"/studies/{self.connection.remote_study}/forms")
        return [FieldDef(form_oid=form["form_name"], form_name=form.get("form_label") or form["form_name"],
                         item_oid=item["item_name"], label=item.get("item_label") or item["item_name"],
                         data_type=item.get("data_type", "text"), units=item.get("units", ""))
                for form in body.get("forms", []) for item in form.get("items", [])]

    def pull_clinical_data(self, since: datetime | None) -> list[FlatValue]:
        params = {"modified_date__gt": since.astimezone(UTC).isoformat()} if since else {}
        body = self._get("reading data", f"/studies/{self.connection.remote_study}/data", **params)
        return [FlatValue(subject_key=row["subject"], visit_oid=row["event_name"],
                          visit_name=row.get("event_label") or row["event_name"], form_oid=row["form_name"],
                          item_oid=row["item_name"], value=str(row.get("value") or ""), site=row.get("site", ""),
                          repeat_key=str(row.get("itemgroup_sequence") or "1"),
                          entered_at=datetime.fromisoformat(row["modified_date"]) if row.get("modified_date")
                          else None)
                for row in body.get("data", [])]

    def push_queries(self, queries: list[OutboundQuery]) -> dict[str, str]:
        if not queries:
            return {}
        payload = {"study_name": self.connection.remote_study, "queries": [
            {"subject": q.subject_key, "event_name": q.visit_oid, "form_name": q.form_oid,
             "item_name": q.item_oid, "itemgroup_sequence": q.repeat_key, "message": q.text} for q in queries]}
        body = self._request("raising queries", "POST", "/app/cdm/queries", json=payload,
                             headers={"Authorization": self._session(), "Accept": "application/json"})
        ids = [row["query_id"] for row in body.get("queries", [])]
        if len(ids) != len(queries):
            raise EdcError(f"{self.connection}: Vault created {len(ids)} of {len(queries)} queries.")
        return {q.local_id: remote for q, remote in zip(queries, ids, strict=True)}

    def pull_query_states(self) -> list[QueryState]:
        body = self._get("reading queries", "/queries", study_name=self.connection.remote_study)
        return [QueryState(remote_id=row["query_id"], state=_STATES.get(row.get("status", ""), row.get("status", "")),
                           subject_key=row.get("subject", ""), item_oid=row.get("item_name", ""),
                           text=row.get("message", ""), response=row.get("response", ""))
                for row in body.get("queries", [])]
