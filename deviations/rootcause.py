"""RootCauseAnalysis: recurring deviation patterns per site, category and period, measured the way
the KRIs measure rates (sdv.kri, gsm's over-dispersion-adjusted normal approximation; kri0003 and
kri0004 are the non-important and important deviation rates), with a proposed root cause.

For the period, each site's numerator is its deviations of a category (or of an importance: the
rows "importance:important" and "importance:non_important" are kri0003/kri0004 over the period)
and its denominator the subjects' days on study inside the period. A site is a pattern when its
score reaches the KRI's upper flag threshold (z >= 2) with at least MIN_COUNT deviations. The
proposal follows the numbers:
- subject: most of the site's deviations are one subject's (>= 60%);
- protocol design: the category is flagged at many sites (>= 25% of the sites with subjects):
  the protocol is hard to follow;
- system: most of the site's deviations of the category happened on one day (a batch: a device,
  an EDC or scheduling system), >= 50%;
- training for consent, eligibility, prohibited medication and important deviations; site
  process for visit windows, dosing and safety reporting.
The kri.py module is the KRI engine's pure numpy part: no sdv model is read from here."""

import datetime

import numpy as np
import pandas as pd
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from deviations.models import Deviation, RootCause, RootCauseAnalysis
from sdv.kri import KriInputError, KriMethod, kri_from_groups
from studies.audit import set_audit
from studies.models import Study, Subject, SubjectVisit

# gsm's defaults for kri0003/kri0004: thresholds -3, -2, 2, 3 and an accrual of 30 days.
METHOD = KriMethod(analysis="normal_rate", thresholds=(-3, -2, 2, 3), accrual_threshold=30,
                   accrual_metric="denominator")
FLAG_AT = 2.0
MIN_COUNT = 3
TRAINING = {"informed_consent", "eligibility", "prohibited_medication", "importance:important", "other"}


def subject_days(*, study: Study, start: datetime.date, end: datetime.date) -> pd.Series:
    """Per site, the subjects' days on study inside [start, end]: participation from the first
    participation date (else enrolment, else first dose) to the last (else the last visit, else
    `end`), both ends counted."""
    rows = Subject.objects.filter(study=study).exclude(status=Subject.Status.SCREEN_FAILED).values_list(
        "pk", "site_id", "first_participation_date", "enrolment_date", "first_dose_date", "last_participation_date")
    frame = pd.DataFrame.from_records(list(rows), columns=["pk", "site", "first", "enrolment", "dose", "last"])
    if frame.empty:
        return pd.Series(dtype="float64")
    last_visit = dict(SubjectVisit.objects.filter(study=study, actual_date__isnull=False).order_by()
                      .values("subject_id").annotate(last=Max("actual_date")).values_list("subject_id", "last"))
    begin = pd.to_datetime(frame["first"]).fillna(pd.to_datetime(frame["enrolment"])).fillna(
        pd.to_datetime(frame["dose"]))
    stop = pd.to_datetime(frame["last"]).fillna(pd.to_datetime(frame["pk"].map(last_visit))).fillna(pd.Timestamp(end))
    begin, stop = begin.clip(lower=pd.Timestamp(start)), stop.clip(upper=pd.Timestamp(end))
    days = ((stop - begin).dt.days + 1).clip(lower=0).fillna(0)
    return days.groupby(frame["site"]).sum().astype("float64")


def _deviations(study: Study, start, end) -> pd.DataFrame:
    rows = (Deviation.objects.filter(study=study, subject__isnull=False, occurred_on__gte=start, occurred_on__lte=end)
            .exclude(resolution=Deviation.Resolution.WITHDRAWN)
            .values_list("pk", "site_id", "subject_id", "category", "importance", "occurred_on"))
    return pd.DataFrame.from_records(list(rows), columns=["pk", "site", "subject", "category", "importance", "date"])


def _propose(group: str, rows: pd.DataFrame, flagged_share: float, study_share: float) -> tuple[str, str, dict]:
    top_subject = rows["subject"].value_counts(normalize=True).iloc[0]
    top_day = rows["date"].value_counts(normalize=True).iloc[0]
    numbers = {"top_subject_share": round(float(top_subject), 3), "same_day_share": round(float(top_day), 3),
               "sites_flagged_share": round(flagged_share, 3), "category_share_of_study": round(study_share, 3)}
    if top_subject >= 0.6 and rows["subject"].nunique() < len(rows):
        return RootCause.SUBJECT, (f"{top_subject:.0%} of these deviations are one subject's: a subject-related "
                                   "cause (compliance, condition) is likelier than the site's"), numbers
    if flagged_share >= 0.25:
        return RootCause.PROTOCOL_DESIGN, (f"{flagged_share:.0%} of the sites are flagged for this: the protocol "
                                           "is likely hard to follow here"), numbers
    if top_day >= 0.5 and len(rows) >= MIN_COUNT:
        return RootCause.SYSTEM, (f"{top_day:.0%} of them happened on one day: a batch points to a system "
                                  "(device, EDC, scheduling) rather than to people"), numbers
    if group in TRAINING:
        return RootCause.TRAINING, "a recurring pattern in a step that depends on the site staff's knowledge", numbers
    return RootCause.PROCESS, "a recurring pattern in a step the site's own process organises", numbers


def root_cause_analyse(*, study: Study, actor, end: datetime.date, period_days: int = 90) -> list[tuple]:
    """Find the period's patterns and store each as a proposal (idempotent: a pattern already
    stored for the same site, group and period is refreshed while still proposed, never changed
    once a person decided). Returns [(RootCauseAnalysis, created)]."""
    start = end - datetime.timedelta(days=period_days - 1)
    deviations = _deviations(study, start, end)
    days = subject_days(study=study, start=start, end=end)
    days = days[days > 0]
    if deviations.empty or days.empty:
        return []
    deviations["group"] = deviations["category"]
    by_importance = deviations.assign(group="importance:" + deviations["importance"])
    both = pd.concat([deviations, by_importance], ignore_index=True)
    sites = days.index.to_numpy()
    patterns = []
    # Categories first: a deviation belongs to one pattern, its category's where there is one; the
    # importance rows (kri0003/kri0004) keep the deviations no category pattern took.
    groups = sorted(both.groupby("group"), key=lambda item: (item[0].startswith("importance:"), item[0]))
    for group, rows in groups:
        counts = rows.groupby("site").size().reindex(sites, fill_value=0).to_numpy(dtype="float64")
        try:
            result = kri_from_groups(groups=sites, numerator=counts, denominator=days.to_numpy(), method=METHOD)
        except KriInputError:
            continue
        flagged = np.nan_to_num(result.score, nan=-np.inf) >= FLAG_AT
        share = float(flagged.mean())
        for i in np.flatnonzero(flagged & (result.numerator >= MIN_COUNT)):
            site = int(result.groups[i])
            here = rows[rows["site"] == site]
            figures = {"deviations": int(result.numerator[i]), "subject_days": float(result.denominator[i]),
                       "site_rate_per_1000_days": round(1000 * float(result.metric[i]), 3),
                       "study_rate_per_1000_days": round(1000 * result.overall, 3),
                       "score": round(float(result.score[i]), 3), "flag": int(result.flag[i]),
                       "overdispersion": round(float(result.factor), 4), "subjects": int(here["subject"].nunique()),
                       "method": "gsm normal approximation (rate), thresholds -3/-2/2/3, accrual 30 days"}
            cause, why, numbers = _propose(group, here, share, len(rows) / len(deviations))
            figures |= numbers
            rationale = (f"Site rate {figures['site_rate_per_1000_days']} per 1000 subject-days against the study's "
                         f"{figures['study_rate_per_1000_days']} (score {figures['score']}, flag {figures['flag']}; "
                         f"{figures['deviations']} deviations, {figures['subjects']} subjects): {why}.")
            patterns.append(_store(study, site, group, start, end, figures, cause, rationale,
                                   list(here["pk"]), actor))
    return patterns


def _store(study, site, group, start, end, figures, cause, rationale, deviation_ids, actor) -> tuple:
    with transaction.atomic():
        found = RootCauseAnalysis.objects.select_for_update().filter(study=study, site_id=site, category=group,
                                                                      period_start=start).first()
        if found is not None and found.status != RootCauseAnalysis.Status.PROPOSED:
            return found, False
        analysis = found or RootCauseAnalysis(study=study, site_id=site, category=group, period_start=start)
        before = (analysis.period_end, analysis.figures, analysis.proposed_root_cause, analysis.rationale)
        analysis.period_end, analysis.figures = end, figures
        analysis.proposed_root_cause, analysis.rationale = cause, rationale
        if found is not None and before == (end, figures, cause, rationale):
            return found, False
        set_audit(analysis, actor=actor, reason="RootCauseAnalysis: recurring pattern found"
                  if found is None else "RootCauseAnalysis: figures refreshed")
        analysis.save()
        linked = Deviation.objects.filter(pk__in=deviation_ids, root_cause_analysis__isnull=True)
        for deviation in linked:
            deviation.root_cause_analysis = analysis
            set_audit(deviation, actor=actor, reason=f"Part of the recurring pattern of root-cause analysis "
                                                     f"{analysis.pk}")
            deviation.save(update_fields=["root_cause_analysis"])
    return analysis, found is None


def root_cause_decide(*, analysis: RootCauseAnalysis, actor, accept: bool, reason: str,
                      root_cause: str | None = None, note: str = "") -> RootCauseAnalysis:
    """A person accepts the proposal (or edits it: another root cause), or rejects it. An accepted
    root cause is set on the pattern's deviations that have none yet (audited)."""
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason is required."})
    if root_cause and root_cause not in RootCause.values:
        raise ValidationError({"root_cause": f"One of {', '.join(RootCause.values)}."})
    with transaction.atomic():
        analysis = RootCauseAnalysis.objects.select_for_update().get(pk=analysis.pk)
        if analysis.status != RootCauseAnalysis.Status.PROPOSED:
            raise ValidationError({"status": f"Already decided ({analysis.get_status_display()})."})
        chosen = root_cause or analysis.proposed_root_cause
        if not accept:
            analysis.status = RootCauseAnalysis.Status.REJECTED
        else:
            analysis.root_cause = chosen
            analysis.status = (RootCauseAnalysis.Status.ACCEPTED if chosen == analysis.proposed_root_cause
                               else RootCauseAnalysis.Status.EDITED)
        analysis.decision_note, analysis.decided_by, analysis.decided_at = note, actor, timezone.now()
        set_audit(analysis, actor=actor, reason=reason.strip())
        analysis.save()
        if accept:
            for deviation in analysis.deviations.filter(root_cause=""):
                deviation.root_cause = chosen
                set_audit(deviation, actor=actor, reason=f"Root cause from analysis {analysis.pk}: {reason.strip()}")
                deviation.save(update_fields=["root_cause"])
    return analysis
