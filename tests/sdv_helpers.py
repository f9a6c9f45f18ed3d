"""Set-up shared by the source data verification tests: a study with two sites, a CRA of site 101,
the site staff of each site, a data manager; at each site a subject with a Week 4 visit of lab
values (haemoglobin in g/L, potassium, creatinine in umol/L, glucose, ALT) and a vital sign; and
generated lab report pages (sdv.verification.samples) to upload."""

from types import SimpleNamespace

from django.core.files.uploadedfile import SimpleUploadedFile

from sdv.verification import samples
from studies.models import DataPoint, Role
from studies.services import cra_site_assign, membership_grant
from tests.conftest import skip_or_fail
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
    VisitDefinitionFactory,
)

# The page prints conventional names and units; the EDC holds SI units for haemoglobin.
PAGE_LINES = [
    samples.LabLine("Haemoglobin", "13.5", "g/dL", "12.0 - 16.0", ""),
    samples.LabLine("K+", "5.4", "mmol/L", "3.5 - 5.1", "H"),
    samples.LabLine("Creatinine", "88", "umol/L", "62 - 106", ""),
    samples.LabLine("Glucose (fasting)", "5.2", "mmol/L", "3.9 - 5.6", ""),
    samples.LabLine("SGPT", "32", "U/L", "0 - 41", ""),
]
# item OID, label, units, EDC value: haemoglobin converted (13.5 g/dL = 135 g/L), potassium
# mistyped (4.5 for 5.4: a discrepancy), the others as printed; the pulse is on no lab report.
EDC_VALUES = [("LB.HGB", "Hemoglobin", "g/L", "135"), ("LB.K", "Potassium", "mmol/L", "4.5"),
              ("I.CREAT", "Creatinine", "umol/L", "88"), ("LB.GLUC", "Glucose", "mmol/L", "5.2"),
              ("I.ALT", "ALT", "U/L", "32"), ("VS.PULSE", "Pulse", "beats/min", "72")]


def require_tesseract():
    from sdv.verification.ocr import OcrUnavailable, tesseract_version

    try:
        return tesseract_version()
    except OcrUnavailable as error:
        skip_or_fail(str(error), required_by="TRIALOPS_REQUIRE_SERVICES")


def stored_files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def make_trial():
    study = StudyFactory(protocol_id="LAB-017", name="Lab Outcomes Trial")
    site = SiteFactory(study=study, number="101", name="Hôpital Cochin", language="en")
    other_site = SiteFactory(study=study, number="102", name="Charité", country="DE", city="Berlin", language="en")
    cra = UserFactory(username="cra.sdv", first_name="Chloé", last_name="Roux")
    coordinator = UserFactory(username="coord.101")
    other_coordinator = UserFactory(username="coord.102")
    data_manager = UserFactory(username="dm.sdv")
    membership_grant(user=cra, study=study, role=Role.CRA)
    cra_site_assign(cra=cra, site=site)
    membership_grant(user=coordinator, study=study, role=Role.SITE_COORDINATOR, site=site)
    membership_grant(user=other_coordinator, study=study, role=Role.SITE_COORDINATOR, site=other_site)
    membership_grant(user=data_manager, study=study, role=Role.DATA_MANAGER)
    week4 = VisitDefinitionFactory(study=study, oid="SE.WEEK4", name="Week 4", order=4)
    labs = FormDefinitionFactory(study=study, oid="F.LB", name="Laboratory")
    items = {}
    for order, (oid, label, units, _) in enumerate(EDC_VALUES):
        items[oid] = ItemDefinitionFactory(study=study, form=labs, oid=oid, label=label, units=units, order=order,
                                           range_low=None, range_high=None, critical=oid == "LB.K")
    subject = SubjectFactory(site=site, subject_id="101-004")
    visit = SubjectVisitFactory(subject=subject, definition=week4)
    other_subject = SubjectFactory(site=other_site, subject_id="102-001")
    other_visit = SubjectVisitFactory(subject=other_subject, definition=week4)
    points, other_points = {}, {}
    for oid, _, _, value in EDC_VALUES:
        points[oid] = DataPointFactory(visit=visit, item=items[oid], raw_value=value, value_number=float(value),
                                       sdv_state=DataPoint.SdvState.TO_VERIFY)
        other_points[oid] = DataPointFactory(visit=other_visit, item=items[oid], raw_value=value,
                                             value_number=float(value), sdv_state=DataPoint.SdvState.TO_VERIFY)
    return SimpleNamespace(**locals())


def page_png(lines=None, *, subject_id="101-004", degradation=None, dpi=200) -> bytes:
    image = samples.lab_report_image(lines or PAGE_LINES, subject_id=subject_id, visit="Week 4",
                                     collected="2025-03-04 08:15", dpi=dpi)
    if degradation is not None:
        image = samples.degrade(image, degradation, seed=1)
    return samples.image_bytes(image, "png", dpi=dpi)


def upload_file(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)
