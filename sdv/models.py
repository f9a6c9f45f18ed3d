"""Source documents for source data verification. Extraction and matching come later."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import Site, Study, Subject, SubjectVisit


def source_document_path(instance, filename):
    # Files live under an opaque per-study, per-site path; the name carries no subject identifier.
    return f"source/{instance.study_id}/{instance.site_id}/{filename}"


class SourceDocument(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        PROCESSING = "processing", "Processing"
        EXTRACTED = "extracted", "Extracted"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="source_documents")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="source_documents")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="source_documents")
    visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT, related_name="source_documents",
                              null=True, blank=True)
    file = models.FileField(upload_to=source_document_path)
    content_type = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-uploaded_at"]

    def clean(self):
        if self.subject_id and self.site_id and self.subject.site_id != self.site_id:
            raise ValidationError({"site": "The document's site must be its subject's site."})
        if self.visit_id and self.visit.subject_id != self.subject_id:
            raise ValidationError({"visit": "The visit belongs to another subject."})

    def __str__(self):
        return f"Source document {self.pk} ({self.get_status_display()})"
