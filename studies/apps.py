from django.apps import AppConfig


def study_site_ids(study_id: int) -> list[int]:
    """Every site of a study, for workflow steps that fan out per site (`fan_out: sites`)."""
    from studies.models import Site

    return list(Site.objects.filter(study_id=study_id).order_by("pk").values_list("pk", flat=True))


class StudiesConfig(AppConfig):
    name = "studies"
    verbose_name = "Studies and EDC data"

    def ready(self):
        from django.db.models.signals import post_migrate, pre_migrate

        from agents.api import StudyAccess, study_access_set
        from agents.orchestrator import study_sites_provider_set
        from studies import (
            integrity,
            signals,  # noqa: F401  (login/logout audit, access-control audit registration)
        )
        from studies.ingest import tasks  # noqa: F401  (registers the background import task)
        from studies.selectors import study_list, study_user_can

        # agents imports no domain app: it is told here how to list a study's sites (fan_out: sites)
        # and which studies a user sees and may run workflows on (the scoped selectors every app uses).
        study_sites_provider_set(study_site_ids)
        study_access_set(StudyAccess(study_list=study_list, study_user_can=study_user_can))
        # The data point integrity triggers are dropped before migrations run and installed after.
        pre_migrate.connect(integrity.before_migrate, sender=self, dispatch_uid="studies.integrity.before")
        post_migrate.connect(integrity.after_migrate, sender=self, dispatch_uid="studies.integrity.after")
