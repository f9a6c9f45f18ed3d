"""A fake OpenAI-compatible server: POST /v1/chat/completions in OpenAI's wire format (choices,
message content or refusal, finish_reason, usage tokens; response_format json_schema and json_object).

It records every request (headers and body) and answers each from a script of behaviours, then
"ok" once the script is used up:
ok, 429, 500, timeout (sleeps past the client's time-out, then answers), malformed_body (a 200 whose
body is not JSON), malformed_json (the message content is not JSON), refusal, schema_invalid.
"""

import json
import time
from dataclasses import dataclass, field

from tests.fakes import read_body, respond

BEHAVIOURS = ("ok", "429", "500", "timeout", "malformed_body", "malformed_json", "refusal", "schema_invalid")


@dataclass
class FakeOpenAI:
    answer: object = "A neutral query text."  # content when "ok": a str, or an object sent as JSON
    script: list[str] = field(default_factory=list)
    sleep_seconds: float = 2.0
    tokens: tuple[int, int] = (120, 30)
    requests: list[dict] = field(default_factory=list)

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/v1/chat/completions":
            return self._error(start_response, "404 Not Found", "not_found", "Unknown path")
        body = json.loads(read_body(environ) or b"{}")
        self.requests.append({"authorization": environ.get("HTTP_AUTHORIZATION", ""), "body": body})
        problem = self._request_problem(body)
        if problem:
            return self._error(start_response, "400 Bad Request", "invalid_request_error", problem)
        behaviour = self.script.pop(0) if self.script else "ok"
        assert behaviour in BEHAVIOURS, behaviour
        if behaviour == "429":
            return self._error(start_response, "429 Too Many Requests", "rate_limit_exceeded", "Rate limit reached")
        if behaviour == "500":
            return self._error(start_response, "500 Internal Server Error", "server_error", "The server had an error")
        if behaviour == "timeout":
            time.sleep(self.sleep_seconds)
        if behaviour == "malformed_body":
            return respond(start_response, "200 OK", '{"id": "chatcmpl-1", "choices": [', "application/json")
        return respond(start_response, "200 OK", json.dumps(self._completion(body, behaviour)), "application/json")

    def _completion(self, body: dict, behaviour: str) -> dict:
        message = {"role": "assistant", "content": self._content(behaviour), "refusal": None}
        if behaviour == "refusal":
            message.update(content=None, refusal="I'm sorry, I cannot help with that request.")
        tokens_in, tokens_out = self.tokens
        return {
            "id": f"chatcmpl-fake{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "gpt-4o-mini"), "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out},
        }

    def _content(self, behaviour: str) -> str:
        if behaviour == "malformed_json":
            return '{"severity": "major", "text": '
        if behaviour == "schema_invalid":
            return json.dumps({"unexpected": True})
        return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)

    @staticmethod
    def _request_problem(body: dict) -> str:
        """What OpenAI itself would refuse with a 400 (the parts our client could get wrong)."""
        if not body.get("model") or not body.get("messages"):
            return "model and messages are required"
        response_format = body.get("response_format") or {"type": "text"}
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            if not spec.get("name") or not isinstance(spec.get("schema"), dict):
                return "response_format.json_schema needs a name and a schema"
        elif kind == "json_object":
            if not any("json" in (m.get("content") or "").lower() for m in body["messages"]):
                return "'messages' must contain the word 'json' to use response_format json_object"
        elif kind != "text":
            return f"Invalid response_format type {kind!r}"
        return ""

    @staticmethod
    def _error(start_response, status: str, code: str, message: str):
        body = {"error": {"message": message, "type": code, "param": None, "code": code}}
        return respond(start_response, status, json.dumps(body), "application/json")

    @property
    def bodies(self) -> list[dict]:
        return [request["body"] for request in self.requests]
