"""The one interface every vendor EDC adapter implements, and the credentials they use.

Credentials live in the environment (collected by config/settings/base.py into EDC_SECRETS), named
by the connection's prefix: <PREFIX>_USERNAME, <PREFIX>_PASSWORD, <PREFIX>_TOKEN,
<PREFIX>_WEBHOOK_SECRET, each also as <PREFIX>_<NAME>_FILE (a mounted secret file, read at use so
a rotated secret needs no restart). A secret never appears in a log line or an error message:
vendor errors are passed through `scrub` before they leave an adapter.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings

from studies.models import EdcConnection


class EdcError(Exception):
    """A vendor call failed, or the connection is misconfigured. The message is safe to log."""


class EdcTransientError(EdcError):
    """A failure worth retrying (network, timeout, 5xx)."""


class EdcNotSupported(EdcError):
    """The vendor's API has no such operation."""


def edc_secret(connection: EdcConnection, name: str) -> str:
    """The secret <prefix>_<name>, from the variable itself or from the file <prefix>_<name>_FILE."""
    variable = f"{connection.credentials_env}_{name}"
    secrets = settings.EDC_SECRETS
    if secrets.get(variable):
        return secrets[variable]
    if secrets.get(f"{variable}_FILE"):
        try:
            value = Path(secrets[f"{variable}_FILE"]).read_text().strip()
        except OSError as exc:
            raise EdcError(f"{variable}_FILE cannot be read ({exc.strerror}).") from None
        if value:
            return value
    raise EdcError(f"{variable} (or {variable}_FILE) is not set for {connection}.")


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class OutboundQuery:
    """A query to raise in the EDC, addressed the way EDCs address a data point."""

    local_id: str
    subject_key: str
    visit_oid: str
    form_oid: str
    item_oid: str
    text: str
    repeat_key: str = "1"


@dataclass(frozen=True)
class QueryState:
    """A query's state as the EDC reports it (ODM 2.0 words: open, answered, closed, cancelled)."""

    remote_id: str
    state: str
    subject_key: str = ""
    item_oid: str = ""
    text: str = ""
    response: str = ""


@dataclass(frozen=True)
class FieldDef:
    """An item of a vendor's metadata when it is not ODM (REDCap data dictionary, Vault forms)."""

    form_oid: str
    form_name: str
    item_oid: str
    label: str
    data_type: str = "text"
    units: str = ""


@dataclass(frozen=True)
class FlatValue:
    """One value of a vendor's non-ODM clinical data export."""

    subject_key: str
    visit_oid: str
    visit_name: str
    form_oid: str
    item_oid: str
    value: str
    site: str = ""
    repeat_key: str = "1"
    entered_at: datetime | None = None


class EdcAdapter(ABC):
    """Pull metadata, pull clinical data changed since a time, push queries, pull query states.

    pull_metadata / pull_clinical_data return ODM bytes (Rave) or FieldDef / FlatValue lists
    (REDCap, Vault): the sync service feeds ODM to the ODM importer and flat values to its own."""

    source: str  # Import.Source

    def __init__(self, connection: EdcConnection):
        self.connection = connection
        self.timeout = settings.EDC_HTTP_TIMEOUT_SECONDS

    @abstractmethod
    def pull_metadata(self) -> bytes | list[FieldDef]: ...

    @abstractmethod
    def pull_clinical_data(self, since: datetime | None) -> bytes | list[FlatValue]: ...

    @abstractmethod
    def push_queries(self, queries: list[OutboundQuery]) -> dict[str, str]:
        """Raise `queries` in the EDC; returns local id -> the EDC's id of each."""

    @abstractmethod
    def pull_query_states(self) -> list[QueryState]: ...

    def secrets(self) -> list[str]:
        """Every secret this adapter may hold, for scrubbing."""
        found = []
        for name in ("PASSWORD", "TOKEN", "WEBHOOK_SECRET"):
            try:
                found.append(edc_secret(self.connection, name))
            except EdcError:
                pass
        return found

    def fail(self, what: str, exc: BaseException, *, transient: bool = False) -> EdcError:
        message = scrub(f"{self.connection}: {what} failed: {type(exc).__name__}: {exc}", self.secrets())
        return (EdcTransientError if transient else EdcError)(message[:2000])


def adapter_for(connection: EdcConnection) -> EdcAdapter:
    from studies.edc.rave import RaveAdapter  # noqa: PLC0415 (vendor libraries load on use)
    from studies.edc.redcap import RedcapAdapter  # noqa: PLC0415
    from studies.edc.veeva import VeevaAdapter  # noqa: PLC0415

    adapters = {EdcConnection.Vendor.RAVE: RaveAdapter, EdcConnection.Vendor.REDCAP: RedcapAdapter,
                EdcConnection.Vendor.VEEVA: VeevaAdapter}
    return adapters[connection.vendor](connection)
