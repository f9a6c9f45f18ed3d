from django.apps import AppConfig


def _edit_checks_from_import(sender, run, **kwargs) -> None:
    """An import's new or changed metadata gives the study its generated edit checks, in the
    import's transaction (so a failed import leaves no checks behind)."""
    from queries.services import edit_checks_generate  # noqa: PLC0415 (apps are loading)

    if run.study is not None:
        counts = edit_checks_generate(study=run.study, actor=run.actor,
                                      reason=f"Generated from the metadata of import {run.record.pk}")
        for skipped in counts["skipped"]:
            run.warn(f"Edit check {skipped['code']} not generated: {skipped['reason']}", where="metadata")


class QueriesConfig(AppConfig):
    name = "queries"

    def ready(self):
        from studies.ingest.base import import_loaded  # noqa: PLC0415

        import_loaded.connect(_edit_checks_from_import, dispatch_uid="queries.edit_checks_from_import")
