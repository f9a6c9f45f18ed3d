"""Medidata Rave through Rave Web Services (rwslib): metadata and datasets as ODM 1.3, queries as
mdsol:Query in ODM posted to PostODMClinicalData, query states read from the dataset's mdsol:Query."""

import re
import uuid
from datetime import UTC, datetime

from lxml import etree
from requests import RequestException
from rwslib import AuthorizationException, RWSConnection
from rwslib.rws_requests import PostDataRequest, StudyDatasetRequest, StudyVersionRequest, StudyVersionsRequest
from rwslib.rwsobjects import RWSException

from studies.edc.base import EdcAdapter, EdcError, OutboundQuery, QueryState, edc_secret
from studies.models import Import

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
MDSOL_NS = "http://www.mdsol.com/ns/odm/metadata"
_STUDY = re.compile(r"^(?P<project>[^()]+)\((?P<env>[^()]+)\)$")
# Rave query status -> the ODM 2.0 words used across TrialOps.
_STATES = {"open": "open", "answered": "answered", "closed": "closed", "cancelled": "cancelled",
           "canceled": "cancelled", "requery": "open"}


class RaveAdapter(EdcAdapter):
    source = Import.Source.RAVE

    def __init__(self, connection):
        super().__init__(connection)
        match = _STUDY.match(connection.remote_study.strip())
        if not match:
            raise EdcError(f"{connection}: remote study {connection.remote_study!r} is not 'Project(Environment)'.")
        self.project, self.environment = match["project"], match["env"]

    def _send(self, what: str, request):
        rws = RWSConnection(self.connection.base_url.rstrip("/"), edc_secret(self.connection, "USERNAME"),
                            edc_secret(self.connection, "PASSWORD"))
        try:
            return rws.send_request(request, timeout=self.timeout, retries=0)
        except (RWSException, AuthorizationException) as exc:
            # rwslib words a 5xx or a timeout this way; those are worth a retry, the rest is not.
            transient = any(word in str(exc) for word in ("Server Error", "Timeout", "(503)", "(502)"))
            raise self.fail(what, exc, transient=transient) from None
        except RequestException as exc:  # connection refused, timeout: worth a retry
            raise self.fail(what, exc, transient=True) from None

    def pull_metadata(self) -> bytes:
        versions = self._send("listing study versions", StudyVersionsRequest(self.project))
        if not versions:
            raise EdcError(f"{self.connection}: Rave lists no metadata version of {self.project}.")
        latest = max(versions, key=lambda v: int(v.oid))
        return self._send("reading metadata", StudyVersionRequest(self.project, latest.oid)).encode("utf-8")

    def pull_clinical_data(self, since: datetime | None) -> bytes:
        start = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if since else None
        request = StudyDatasetRequest(self.project, self.environment, dataset_type="regular", start=start)
        return self._send("reading the clinical dataset", request).encode("utf-8")

    def push_queries(self, queries: list[OutboundQuery]) -> dict[str, str]:
        if not queries:
            return {}
        odm = etree.Element(f"{{{ODM_NS}}}ODM", nsmap={None: ODM_NS, "mdsol": MDSOL_NS}, ODMVersion="1.3",
                            FileType="Transactional", FileOID=str(uuid.uuid4()),
                            CreationDateTime=datetime.now(UTC).isoformat())
        clinical = etree.SubElement(odm, f"{{{ODM_NS}}}ClinicalData", StudyOID=self.connection.remote_study,
                                    MetaDataVersionOID="1")
        for query in queries:
            subject = etree.SubElement(clinical, f"{{{ODM_NS}}}SubjectData", SubjectKey=query.subject_key,
                                       TransactionType="Update")
            event = etree.SubElement(subject, f"{{{ODM_NS}}}StudyEventData", StudyEventOID=query.visit_oid)
            form = etree.SubElement(event, f"{{{ODM_NS}}}FormData", FormOID=query.form_oid)
            group = etree.SubElement(form, f"{{{ODM_NS}}}ItemGroupData", ItemGroupOID=query.form_oid,
                                     ItemGroupRepeatKey=query.repeat_key)
            item = etree.SubElement(group, f"{{{ODM_NS}}}ItemData", ItemOID=query.item_oid,
                                    TransactionType="Context")
            etree.SubElement(item, f"{{{MDSOL_NS}}}Query", Value=query.text, Status="Open",
                             Recipient="Site from System", QueryRepeatKey=query.local_id)
        response = self._send("posting queries", PostDataRequest(etree.tostring(odm, xml_declaration=True,
                                                                                encoding="utf-8")))
        if not response.istransactionsuccessful:
            raise EdcError(f"{self.connection}: Rave refused the queries (reference {response.referencenumber}).")
        # Rave answers with counts, not ids: a query is known by its repeat key, which we set.
        return {query.local_id: query.local_id for query in queries}

    def pull_query_states(self) -> list[QueryState]:
        document = etree.fromstring(self.pull_clinical_data(None), etree.XMLParser(resolve_entities=False,
                                                                                   no_network=True))
        states = []
        for query in document.iter(f"{{{MDSOL_NS}}}Query"):
            item = query.getparent()
            subject = next((a for a in item.iterancestors(f"{{{ODM_NS}}}SubjectData")), None)
            status = (query.get("Status") or "").strip().lower()
            states.append(QueryState(
                remote_id=query.get("QueryRepeatKey", ""), state=_STATES.get(status, status),
                subject_key=subject.get("SubjectKey", "") if subject is not None else "",
                item_oid=item.get("ItemOID", ""), text=query.get("Value", ""), response=query.get("Response", "")))
        return states
