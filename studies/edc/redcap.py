"""REDCap through PyCap (redcap.Project): REDCap's form-encoded API (POST token, content=metadata /
event / record, format=json). Metadata and records come back as FieldDef / FlatValue lists.

REDCap's API has no endpoint for its Data Resolution Workflow (its queries): pushing queries and
pulling their states are not supported and say so."""

import re
from datetime import UTC, datetime

import redcap
from requests import RequestException

from studies.edc.base import EdcAdapter, EdcError, EdcNotSupported, FieldDef, FlatValue, QueryState, edc_secret
from studies.models import Import

_TYPES = {"integer": "integer", "number": "float", "date_ymd": "date", "date_dmy": "date", "date_mdy": "date",
          "datetime_ymd": "datetime", "datetime_seconds_ymd": "datetime", "time": "time"}
_TOKEN = re.compile(r"^[0-9A-Fa-f]{32}$")
# Columns of a flat export that are not fields of a form.
_KEYS = {"redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance", "redcap_data_access_group"}


class RedcapAdapter(EdcAdapter):
    source = Import.Source.REDCAP

    def _project(self) -> redcap.Project:
        token = edc_secret(self.connection, "TOKEN")
        # Checked here: PyCap's own check puts the token in its error message.
        if not _TOKEN.match(token):
            raise EdcError(f"{self.connection.credentials_env}_TOKEN is not a 32-character REDCap API token.")
        url = self.connection.base_url if self.connection.base_url.endswith("/api/") else \
            self.connection.base_url.rstrip("/") + "/api/"
        return redcap.Project(url, token, timeout=self.timeout)

    def _call(self, what: str, call):
        try:
            result = call()
        except RequestException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None) or 0
            raise self.fail(what, exc, transient=status == 0 or status >= 500) from None
        if isinstance(result, dict) and "error" in result:
            raise self.fail(what, EdcError(result["error"]))
        return result

    def pull_metadata(self) -> list[FieldDef]:
        project = self._project()
        metadata = self._call("reading the data dictionary", lambda: project.export_metadata(format_type="json"))
        fields = []
        for row in metadata:
            if row.get("field_type") in ("descriptive", "file", "signature"):
                continue
            validation = row.get("text_validation_type_or_show_slider_number") or ""
            fields.append(FieldDef(form_oid=row["form_name"], form_name=row["form_name"].replace("_", " ").title(),
                                   item_oid=row["field_name"], label=(row.get("field_label") or row["field_name"]),
                                   data_type=_TYPES.get(validation, "text"),
                                   units=row.get("field_note", "") if validation in ("integer", "number") else ""))
        return fields

    def pull_clinical_data(self, since: datetime | None) -> list[FlatValue]:
        project = self._project()
        fields = self.pull_metadata()
        form_of = {f.item_oid: f.form_oid for f in fields}
        id_field = next((f.item_oid for f in fields), "record_id")
        begin = since.astimezone(UTC).replace(tzinfo=None) if since else None
        records = self._call("exporting records", lambda: project.export_records(
            format_type="json", export_data_access_groups=True, date_begin=begin))
        values = []
        for record in records:
            event = record.get("redcap_event_name") or "event_1"
            instance = str(record.get("redcap_repeat_instance") or "1")
            for name, value in record.items():
                if name in _KEYS or name == id_field or name not in form_of or value in ("", None):
                    continue
                values.append(FlatValue(subject_key=str(record[id_field]), visit_oid=event,
                                        visit_name=event.replace("_", " "), form_oid=form_of[name], item_oid=name,
                                        value=str(value), site=record.get("redcap_data_access_group") or "",
                                        repeat_key=instance))
        return values

    def push_queries(self, queries) -> dict[str, str]:
        raise EdcNotSupported("REDCap's API has no endpoint to raise data queries (Data Resolution Workflow).")

    def pull_query_states(self) -> list[QueryState]:
        raise EdcNotSupported("REDCap's API has no endpoint to read data queries (Data Resolution Workflow).")
