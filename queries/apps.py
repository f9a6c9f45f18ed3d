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


def _queries_with_the_edc(sender, connection, actor, adapter, **kwargs) -> None:
    from queries.edc import queries_edc_sync  # noqa: PLC0415 (apps are loading)

    queries_edc_sync(connection=connection, actor=actor, adapter=adapter)


class QueriesConfig(AppConfig):
    name = "queries"

    def ready(self):
        from studies.edc.services import edc_synced  # noqa: PLC0415
        from studies.ingest.base import import_loaded  # noqa: PLC0415

        import_loaded.connect(_edit_checks_from_import, dispatch_uid="queries.edit_checks_from_import")
        edc_synced.connect(_queries_with_the_edc, dispatch_uid="queries.queries_with_the_edc")
