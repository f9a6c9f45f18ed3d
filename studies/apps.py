from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "studies"
    verbose_name = "Studies and EDC data"

    def ready(self):
        from studies import signals  # noqa: F401  (login/logout audit, access-control audit registration)
        from studies.ingest import tasks  # noqa: F401  (registers the background import task)
