"""Forms of the server-rendered UI. They parse and validate input; the services do the writing."""

from django import forms

from studies.models import Site, Subject


class SubjectFilterForm(forms.Form):
    """The subject search on the study page. `sites` is the user's scope, so a site id from
    outside it is simply invalid (and ignored), never a way to probe another site."""

    q = forms.CharField(required=False, max_length=64, label="Subject id",
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Search subject id",
                                                      "aria-label": "Subject id",
                                                      "autocomplete": "off"}))
    site = forms.ModelChoiceField(queryset=Site.objects.none(), required=False, empty_label="All sites",
                                  widget=forms.Select(attrs={"aria-label": "Site"}))
    status = forms.ChoiceField(choices=[("", "All statuses"), *Subject.Status.choices], required=False,
                               widget=forms.Select(attrs={"aria-label": "Status"}))

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites

    def filter(self, subjects):
        """`subjects` narrowed by whichever filters are valid; invalid ones are dropped."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("q"):
            subjects = subjects.filter(subject_id__icontains=data["q"].strip())
        if data.get("site"):
            subjects = subjects.filter(site=data["site"])
        if data.get("status"):
            subjects = subjects.filter(status=data["status"])
        return subjects


# Offered as suggestions only: the reason stays free text because sites word their own reasons.
COMMON_CHANGE_REASONS = (
    "Transcription error",
    "Data entry error",
    "Correction after query",
    "New information from source",
)


class DataPointChangeForm(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput, help_text="The version the user saw")
    raw_value = forms.CharField(required=False, max_length=2000, label="New value",
                                help_text="Leave empty to record the value as missing.")
    reason = forms.CharField(max_length=500, label="Reason for change",
                             help_text="Required (21 CFR Part 11). Recorded with your name and the time.",
                             widget=forms.TextInput(attrs={"list": "change-reasons", "autocomplete": "off"}))


class ImportUploadForm(forms.Form):
    file = forms.FileField(help_text="CDISC ODM 1.3 XML, an HL7 v2 ORU^R01 message, or FHIR R4 JSON.")
    full_snapshot = forms.BooleanField(
        required=False, label="This file is a full snapshot",
        help_text="Values stored for this study but absent from the file are flagged (never deleted).",
    )
