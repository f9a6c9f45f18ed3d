"""A fake Veeva Vault CDMS: POST /api/{version}/auth (form username/password) answers a sessionId;
every other call needs it as the Authorization header; answers are JSON with responseStatus
SUCCESS / FAILURE and errors [{type, message}], as Vault answers."""

import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from tests.fakes import read_body, respond

VERSION = "v24.1"


@dataclass
class FakeVault:
    username: str
    password: str
    study: str = "ACME-101"
    sessions: set[str] = field(default_factory=set)
    queries: list[dict] = field(default_factory=list)
    data: list[dict] = field(default_factory=lambda: [
        {"site": "101", "subject": "SCR-0001", "event_name": "screening", "event_label": "Screening",
         "form_name": "vs", "item_name": "hr", "value": "72", "modified_date": "2025-02-01T09:00:00+00:00"},
        {"site": "101", "subject": "SCR-0002", "event_name": "screening", "event_label": "Screening",
         "form_name": "vs", "item_name": "hr", "value": "88", "modified_date": "2025-02-03T09:00:00+00:00"},
    ])

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        prefix = f"/api/{VERSION}"
        if not path.startswith(prefix):
            return self._fail(start_response, "404 Not Found", "INVALID_DATA", "Unknown API version")
        path = path.removeprefix(prefix)
        if method == "POST" and path == "/auth":
            form = {k: v[0] for k, v in parse_qs(read_body(environ).decode()).items()}
            if (form.get("username"), form.get("password")) != (self.username, self.password):
                return self._fail(start_response, "200 OK", "USERNAME_OR_PASSWORD_INCORRECT",
                                  f"Authentication failed for user: {form.get('username')}")
            session = secrets.token_hex(16)
            self.sessions.add(session)
            return self._ok(start_response, {"sessionId": session, "userId": 1})
        if environ.get("HTTP_AUTHORIZATION") not in self.sessions:
            return self._fail(start_response, "200 OK", "INVALID_SESSION_ID", "Invalid or expired session ID.")
        if method == "GET" and path == f"/app/cdm/studies/{self.study}/forms":
            return self._ok(start_response, {"forms": [{"form_name": "vs", "form_label": "Vital signs", "items": [
                {"item_name": "hr", "item_label": "Heart rate", "data_type": "integer", "units": "beats/min"}]}]})
        if method == "GET" and path == f"/app/cdm/studies/{self.study}/data":
            since = params.get("modified_date__gt")
            return self._ok(start_response, {"data": [d for d in self.data
                                                      if not since or d["modified_date"] > since]})
        if path == "/app/cdm/queries" and method == "POST":
            body = json.loads(read_body(environ))
            created = []
            for query in body["queries"]:
                query_id = f"Q-{len(self.queries) + 1}"
                self.queries.append({**query, "query_id": query_id, "status": "open"})
                created.append({"query_id": query_id, "status": "open"})
            return self._ok(start_response, {"queries": created})
        if path == "/app/cdm/queries" and method == "GET":
            return self._ok(start_response, {"queries": self.queries})
        return self._fail(start_response, "404 Not Found", "INVALID_DATA", f"No resource {path}")

    @staticmethod
    def _ok(start_response, body: dict):
        return respond(start_response, "200 OK", json.dumps({"responseStatus": "SUCCESS", **body}),
                       "application/json")

    @staticmethod
    def _fail(start_response, status: str, kind: str, message: str):
        return respond(start_response, status, json.dumps({"responseStatus": "FAILURE",
                                                           "errors": [{"type": kind, "message": message}]}),
                       "application/json")
