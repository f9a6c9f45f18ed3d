"""The audit trail helpers every app uses (21 CFR Part 11: who, when, old and new value, why).

django-simple-history writes a history row on every save() and delete(). Queryset writes
(update, bulk_update, bulk_create) skip model signals and so would skip the trail: the default
manager of every audited model refuses them, and `audited_bulk_create` / `audited_bulk_update`
are the one way to write in bulk, history rows included, in the same transaction.
"""

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import pandas as pd
from django.db import models, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

_bulk_allowed: ContextVar[bool] = ContextVar("audited_bulk_allowed", default=False)


class AuditBypassError(RuntimeError):
    """A queryset write on an audited model that would leave no history row."""


class ReasonRequired(ValueError):
    """A change to regulated data without a reason for change."""


class AuditedQuerySet(models.QuerySet):
    def _refuse(self, operation: str):
        if not _bulk_allowed.get():
            raise AuditBypassError(
                f"{self.model.__name__}.objects.{operation}() would bypass the audit trail; "
                "use studies.audit.audited_bulk_create / audited_bulk_update"
            )

    def update(self, **kwargs):
        self._refuse("update")
        return super().update(**kwargs)

    def bulk_update(self, objs, fields, batch_size=None):
        self._refuse("bulk_update")
        return super().bulk_update(objs, fields, batch_size=batch_size)

    def bulk_create(self, objs, *args, **kwargs):
        self._refuse("bulk_create")
        return super().bulk_create(objs, *args, **kwargs)


AuditedManager = models.Manager.from_queryset(AuditedQuerySet)


@contextmanager
def _allow_bulk() -> Iterator[None]:
    token = _bulk_allowed.set(True)
    try:
        yield
    finally:
        _bulk_allowed.reset(token)


def _require_reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise ReasonRequired("A reason for change is required.")
    return reason.strip()


def system_account(username: str):
    """The account that writes made by a command, an importer or a sync are attributed to when no
    person makes them (Part 11: every write has an actor). It signs writes; it never logs in."""
    from django.contrib.auth import get_user_model  # noqa: PLC0415 (this module loads before apps)

    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save()
    return user


def set_audit(instance: models.Model, *, actor, reason: str | None) -> models.Model:
    """Attribute the next save()/delete() of `instance` to `actor`, with `reason`."""
    instance._history_user = actor
    instance._change_reason = reason
    return instance


def audited_bulk_create(objs: Iterable[models.Model], *, actor, reason: str, batch_size: int = 1000) -> list:
    objs = list(objs)
    if not objs:
        return []
    model = type(objs[0])
    with transaction.atomic(), _allow_bulk():
        return bulk_create_with_history(
            objs,
            model,
            batch_size=batch_size,
            default_user=actor,
            default_change_reason=_require_reason(reason),
            default_date=timezone.now(),
        )


def audited_bulk_update(
    objs: Iterable[models.Model], fields: list[str], *, actor, reason: str, batch_size: int = 1000
) -> int:
    objs = list(objs)
    if not objs:
        return 0
    model = type(objs[0])
    with transaction.atomic(), _allow_bulk():
        return bulk_update_with_history(
            objs,
            model,
            fields,
            batch_size=batch_size,
            default_user=actor,
            default_change_reason=_require_reason(reason),
            default_date=timezone.now(),
        )


# The columns simple-history adds to a tracked model's own; a history model with anything more
# (a custom field) is refused rather than written half-filled.
_HISTORY_COLUMNS = {"history_id", "history_date", "history_change_reason", "history_type", "history_user_id"}


def audited_copy_create(model: type[models.Model], columns: list[str], rows: "list[tuple] | pd.DataFrame", *,
                        actor, reason: str, into: tuple[str, str] | None = None) -> list[int]:
    """Create `model` rows with PostgreSQL COPY, and their history rows ("+", `actor`, `reason`,
    one history_date) by COPY too, in one transaction. `rows` are tuples of values in the order of
    `columns` (attnames, e.g. "study_id"), or a DataFrame holding those columns (the set-based
    path: formatted as CSV, vectorised); fields left out take their model default. Returns the
    new primary keys in row order. PostgreSQL only: elsewhere use `audited_bulk_create`.

    `into` names other tables (rows, history rows) of the same columns to write to instead: the
    ingest benchmark's floor, the same writes into tables without index, constraint or trigger."""
    from studies.ingest.copy import copy_frame, copy_rows, reserve_ids  # noqa: PLC0415 (ingest imports models)

    reason = _require_reason(reason)
    if len(rows) == 0:
        return []
    meta = model._meta
    by_attname = {f.attname: f for f in meta.concrete_fields if not f.primary_key}
    unknown = set(columns) - set(by_attname)
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    rest = [f for name, f in by_attname.items() if name not in columns]
    # A JSON field's default (a dict or list) goes to COPY as its JSON text, not as a Python object.
    defaults = tuple(json.dumps(f.get_default()) if isinstance(f, models.JSONField) else f.get_default()
                     for f in rest)
    db_columns = [meta.pk.column, *(by_attname[c].column for c in columns), *(f.column for f in rest)]

    history = model.history.model
    extra = {f.attname for f in history._meta.concrete_fields} - {meta.pk.attname, *by_attname}
    if extra != _HISTORY_COLUMNS:
        unfilled = sorted(extra - _HISTORY_COLUMNS)
        raise ValueError(f"{history.__name__} has columns this helper does not fill: {unfilled}")
    stamp = (timezone.now(), getattr(actor, "pk", None), reason, "+")
    history_columns = [*db_columns, "history_date", "history_user_id", "history_change_reason", "history_type"]

    table, history_table = into or (meta.db_table, history._meta.db_table)
    with transaction.atomic():
        ids = reserve_ids(meta.db_table, len(rows), column=meta.pk.column)
        if isinstance(rows, pd.DataFrame):
            frame = rows[list(columns)].reset_index(drop=True)
            frame.insert(0, "pk", ids)
            for field, default in zip(rest, defaults, strict=True):
                frame[field.attname] = default
            frame.columns = db_columns
            copy_frame(table, frame)
            # The history rows are the same CSV with the four history columns appended: one
            # more pass of the C++ formatter, no per-row Python.
            for column, value in zip(history_columns[len(db_columns):], stamp, strict=True):
                frame[column] = value
            copy_frame(history_table, frame)
        else:
            copy_rows(table, db_columns,
                      ((pk, *row, *defaults) for pk, row in zip(ids, rows, strict=False)))
            copy_rows(history_table, history_columns,
                      ((pk, *row, *defaults, *stamp) for pk, row in zip(ids, rows, strict=False)))
    return ids
