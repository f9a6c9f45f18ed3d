"""A fake Medidata Rave Web Services: HTTP basic auth, ODM 1.3 documents at the RWS paths rwslib
calls (metadata/studies/{project}/versions[/{oid}], studies/{project}({env})/datasets/regular
[?start=], webservice.aspx?PostODMClinicalData), and RWS <Response> documents for posts and errors."""

import base64
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from lxml import etree

from tests.fakes import read_body, respond

ODM = "http://www.cdisc.org/ns/odm/v1.3"
MDSOL = "http://www.mdsol.com/ns/odm/metadata"
HEAD = (f'<?xml version="1.0" encoding="utf-8"?><ODM xmlns="{ODM}" xmlns:mdsol="{MDSOL}" ODMVersion="1.3" '
        'FileType="{kind}" FileOID="fake-{kind}" CreationDateTime="2025-03-01T10:00:00">')

METADATA = HEAD.format(kind="Snapshot") + """
<Study OID="Mediflex(Prod)"><GlobalVariables><StudyName>Mediflex</StudyName><StudyDescription/>
<ProtocolName>Mediflex</ProtocolName></GlobalVariables>
<MetaDataVersion OID="12" Name="Version 12">
 <Protocol><StudyEventRef StudyEventOID="SCREEN" OrderNumber="1" Mandatory="Yes"/></Protocol>
 <StudyEventDef OID="SCREEN" Name="Screening" Repeating="No" Type="Scheduled">
  <FormRef FormOID="VS" OrderNumber="1" Mandatory="Yes"/></StudyEventDef>
 <FormDef OID="VS" Name="Vital signs" Repeating="No"><ItemGroupRef ItemGroupOID="VS" Mandatory="Yes"/></FormDef>
 <ItemGroupDef OID="VS" Name="Vital signs" Repeating="No">
  <ItemRef ItemOID="VS.SYSBP" Mandatory="Yes"/><ItemRef ItemOID="VS.DIABP" Mandatory="Yes"/></ItemGroupDef>
 <ItemDef OID="VS.SYSBP" Name="Systolic BP" DataType="integer"/>
 <ItemDef OID="VS.DIABP" Name="Diastolic BP" DataType="integer"/>
</MetaDataVersion></Study></ODM>"""


def _subject(key: str, sysbp: str, diabp: str, query: str = "") -> str:
    return f"""<SubjectData SubjectKey="{key}"><SiteRef LocationOID="101"/>
 <StudyEventData StudyEventOID="SCREEN"><FormData FormOID="VS"><ItemGroupData ItemGroupOID="VS">
  <ItemData ItemOID="VS.SYSBP" Value="{sysbp}">{query}</ItemData><ItemData ItemOID="VS.DIABP" Value="{diabp}"/>
 </ItemGroupData></FormData></StudyEventData></SubjectData>"""


@dataclass
class FakeRave:
    username: str
    password: str
    project: str = "Mediflex"
    environment: str = "Prod"
    requests: list[str] = field(default_factory=list)
    posted: list[bytes] = field(default_factory=list)
    # Values changed after the first pull: an incremental dataset (start=...) holds only these.
    changed_sysbp: str = "135"

    def dataset(self, start: str | None) -> str:
        query = ('<mdsol:Query QueryRepeatKey="Q1" Value="Please verify systolic BP against source." '
                 'Status="Answered" Response="Verified, value correct." Recipient="Site from System"/>')
        subjects = [_subject("101-001", self.changed_sysbp, "80", query)]
        if start is None:
            subjects.append(_subject("101-002", "118", "76"))
        return (HEAD.format(kind="Transactional") + f'<ClinicalData StudyOID="{self.project}({self.environment})" '
                f'MetaDataVersionOID="12">{"".join(subjects)}</ClinicalData></ODM>')

    def _authorised(self, environ) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Basic "):
            return False
        return base64.b64decode(header[6:]).decode() == f"{self.username}:{self.password}"

    def __call__(self, environ, start_response):
        path = unquote(environ["PATH_INFO"]).removeprefix("/RaveWebServices/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.requests.append(f"{environ['REQUEST_METHOD']} {path}?{environ.get('QUERY_STRING', '')}")
        if not self._authorised(environ):
            return respond(start_response, "401 Unauthorized",
                           '<Response ReferenceNumber="x" IsTransactionSuccessful="0" ReasonCode="RWS00008" '
                           'ErrorClientResponseMessage="Authentication failure"/>', "text/xml; charset=utf-8")
        study = f"{self.project}({self.environment})"
        if path == f"metadata/studies/{self.project}/versions":
            body = (HEAD.format(kind="Snapshot") + f'<Study OID="{self.project}"><GlobalVariables>'
                    f'<StudyName>{self.project}</StudyName>'
                    f'<StudyDescription/><ProtocolName>{self.project}</ProtocolName></GlobalVariables>'
                    '<MetaDataVersion OID="11" '
                    'Name="Version 11"/><MetaDataVersion OID="12" Name="Version 12"/></Study></ODM>')
        elif path == f"metadata/studies/{self.project}/versions/12":
            body = METADATA
        elif path == f"studies/{study}/datasets/regular":
            body = self.dataset(query.get("start", [None])[0])
        elif path == "webservice.aspx" and "PostODMClinicalData" in environ.get("QUERY_STRING", ""):
            posted = read_body(environ)
            self.posted.append(posted)
            etree.fromstring(posted)  # a malformed post would be a 400 in Rave
            body = ('<Response ReferenceNumber="r-1" InboundODMFileOID="" IsTransactionSuccessful="1" '
                    'SuccessStatistics="Rave objects touched: Subjects=1; Folders=1; Forms=1; Fields=1; '
                    'LogLines=0" NewRecords="" SubjectNumberInStudy="2" SubjectNumberInStudySite="2"/>')
        else:
            return respond(start_response, "404 Not Found",
                           '<Response ReferenceNumber="x" IsTransactionSuccessful="0" ReasonCode="RWS00001" '
                           f'ErrorClientResponseMessage="No such resource {path}"/>', "text/xml; charset=utf-8")
        return respond(start_response, "200 OK", body, "text/xml; charset=utf-8")
