"""schemathesis over the whole API (issue 24, section 2): generated from the schema the server
publishes, against a live server holding the demo data, as a data manager, a site coordinator and
an auditor. Its examples, coverage, fuzzing and stateful phases must find nothing: no server
error, no answer outside the schema (status code, body, content type), no resource missing after
its creation. Every endpoint added later is covered without a line here.

On PostgreSQL each role gets a server process of its own (gunicorn on the test database), so the
three runs go side by side on separate cores; on SQLite (one writer at a time) they run one after
the other against the test's live server.

The seed is fixed so a run is reproducible (and CI does not turn red on a case nobody saw
locally); `TRIALOPS_FUZZ_SEED` explores others and `TRIALOPS_FUZZ_EXAMPLES` runs more cases."""

import datetime
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework_simplejwt.tokens import RefreshToken

from studies.models import Study

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fuzz]

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).parent / "schemathesis.toml"
CHECKS = ["not_a_server_error", "response_schema_conformance", "status_code_conformance",
          "content_type_conformance", "use_after_free", "ensure_resource_availability"]
ROLES = ["dm", "site1", "auditor"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_test_database(port: int) -> subprocess.Popen:
    """gunicorn (the production server: a sync worker answers one request per connection, so no
    keep-alive connection is left half-read as with runserver) on the database this test writes to."""
    database = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "LOG_LEVEL": "WARNING",
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}
    command = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
               "--workers", "2", "--timeout", "120", "--graceful-timeout", "5",
               # generated filters make long query strings: the API answers them (400), not the server (414)
               "--limit-request-line", "0", "--limit-request-field_size", "0"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the API server process exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer /health within 60 s")


@pytest.fixture
def demo_servers(live_server):
    """Base URLs serving the demo seed and a KRI snapshot (so risk lists have rows): one server
    process per role on PostgreSQL, the live server (once) on SQLite."""
    from django.contrib.auth import get_user_model

    from sdv.agents import RiskAssessmentAgent

    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    seed = get_user_model().objects.get(username="system.seed")
    RiskAssessmentAgent._assess(Study.objects.get(protocol_id="TRIALOPS-DEMO-001"),
                                {"snapshot": datetime.date.today().isoformat()}, seed)
    if connection.vendor != "postgresql":
        yield [live_server.url]
        return
    ports = [_free_port() for _ in ROLES]
    processes = [_serve_test_database(port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            _wait_until_up(url, process)
        yield urls
    finally:
        for process in processes:  # before the test database is flushed
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _schemathesis(url: str, token: str, report: Path) -> subprocess.Popen:
    """The CLI in a process of its own (it keeps a cache in its working directory: the test's)."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--no-color", "--config-file", str(CONFIG), "run",
        f"{url}/api/schema/", "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", os.environ.get("TRIALOPS_FUZZ_EXAMPLES", "5"),
        "--seed", os.environ.get("TRIALOPS_FUZZ_SEED", "20261207"),
        "--request-timeout", "30", "--report", "junit", "--report-junit-path", str(report),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=report.parent)


def _figures(username: str, output: str, seconds: float) -> str:
    operations = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"(\d+) generated", output)
    assert operations and cases, output[-3000:]
    assert int(operations.group(1)) >= 60  # every operation, not a few
    return f"{username}: {operations.group(1)} operations, {cases.group(1)} cases, {seconds:.0f} s"


@pytest.mark.timeout(1800)  # three roles of ~100 operations; a few minutes on an idle machine
def test_the_api_keeps_its_schema_for_every_role(demo_servers, tmp_path):
    from django.contrib.auth import get_user_model

    tokens = {username: str(RefreshToken.for_user(get_user_model().objects.get(username=username)).access_token)
              for username in ROLES}
    side_by_side = len(demo_servers) == len(ROLES)
    figures, started = [], time.monotonic()
    batches = [list(zip(ROLES, demo_servers, strict=True))] if side_by_side else [
        [(username, demo_servers[0])] for username in ROLES]
    for batch in batches:
        batch_started = time.monotonic()
        runs = [(username, _schemathesis(url, tokens[username], tmp_path / f"{username}.xml"))
                for username, url in batch]
        for username, run in runs:
            output, _ = run.communicate(timeout=900)
            assert run.returncode == 0, f"schemathesis as {username} found failures:\n{output[-20000:]}"
            figures.append(_figures(username, output, time.monotonic() - batch_started))
    print(f"schemathesis ({time.monotonic() - started:.0f} s in all): " + "; ".join(figures))
