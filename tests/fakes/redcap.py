"""A fake REDCap API: one endpoint (POST /api/), form-encoded, token in the body, `content` says
what (metadata, record, version), `format=json` answers JSON; a bad token is 403 with
{"error": ...}, as REDCap answers."""

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from tests.fakes import read_body, respond

METADATA = [
    {"field_name": "record_id", "form_name": "enrolment", "field_type": "text", "field_label": "Record ID",
     "text_validation_type_or_show_slider_number": "", "field_note": ""},
    {"field_name": "consent_date", "form_name": "enrolment", "field_type": "text", "field_label": "Consent date",
     "text_validation_type_or_show_slider_number": "date_ymd", "field_note": ""},
    {"field_name": "weight", "form_name": "vitals", "field_type": "text", "field_label": "Weight",
     "text_validation_type_or_show_slider_number": "number", "field_note": "kg"},
    {"field_name": "vitals_note", "form_name": "vitals", "field_type": "descriptive", "field_label": "Note",
     "text_validation_type_or_show_slider_number": "", "field_note": ""},
]


@dataclass
class FakeRedcap:
    token: str
    calls: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=lambda: [
        {"record_id": "1", "redcap_event_name": "baseline_arm_1", "redcap_data_access_group": "paris",
         "consent_date": "2025-01-10", "weight": "71.5", "_modified": "2025-01-10 10:00:00"},
        {"record_id": "2", "redcap_event_name": "baseline_arm_1", "redcap_data_access_group": "paris",
         "consent_date": "2025-01-11", "weight": "", "_modified": "2025-01-11 10:00:00"},
    ])

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/api/":
            return respond(start_response, "404 Not Found", "", "text/plain")
        form = {k: v[0] for k, v in parse_qs(read_body(environ).decode(), keep_blank_values=True).items()}
        self.calls.append({k: v for k, v in form.items() if k != "token"})
        if form.get("token") != self.token:
            return self._json(start_response, "403 Forbidden",
                              {"error": "You do not have permissions to use the API"})
        content = form.get("content")
        if content == "metadata":
            return self._json(start_response, "200 OK", METADATA)
        if content == "version":
            return respond(start_response, "200 OK", "14.5.0", "text/plain")
        if content == "record":
            begin = form.get("dateRangeBegin")
            rows = [r for r in self.records if not begin or r["_modified"] >= begin]
            with_dag = form.get("exportDataAccessGroups") in ("true", "True", "1")
            return self._json(start_response, "200 OK", [
                {k: v for k, v in r.items() if k != "_modified" and (with_dag or k != "redcap_data_access_group")}
                for r in rows])
        return self._json(start_response, "400 Bad Request", {"error": f"The value of content is not valid: {content}"})

    @staticmethod
    def _json(start_response, status: str, body):
        return respond(start_response, status, json.dumps(body), "application/json; charset=utf-8")
