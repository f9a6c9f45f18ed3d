"""Referential integrity of the data point table and its history, checked a statement at a time.

A data point references its subject, visit, form and item. As plain foreign keys, PostgreSQL
checks each reference of each row on its own (one index lookup per row and key, fired at commit):
for an import of 1.1 M lab values that is 4.5 M lookups, more time than writing the rows. These
triggers keep the same guarantees with set-based checks instead:

- inserting data points: after each statement, the distinct subjects, visits, forms and items the
  new rows name are locked against deletion (FOR KEY SHARE, as a foreign key check does) and any
  that does not exist fails the statement with SQLSTATE 23503 (foreign_key_violation, which Django
  raises as IntegrityError);
- changing a data point's subject, visit, form or item: the same check for that row;
- deleting a subject, visit, form or item that a data point still references, truncating one of
  those tables while data points exist, or changing a referenced row's id: refused, 23503.

The history rows of data points reference their user (who made the change) the same way: a data
point's history row is written with it, so a per-row check there costs as much again. A user whose
name is on a data point's history cannot be deleted (deactivate the account instead).

SQLite (the embedded demo) has no statement triggers: there inserts and updates are checked by row
triggers, and deletes by the ORM's PROTECT only (see `_sqlite_statements`).

The checks are immediate (end of statement), where the foreign keys were deferred to commit:
parents are always written before their data points. `install(connection)` and
`uninstall(connection)` are run by the migration that replaced the foreign keys. Around every
`migrate` the triggers are dropped and installed again (`before_migrate`, `after_migrate`, connected
in studies/apps.py): SQLite rebuilds a table to alter it and refuses while a trigger names the table
being rebuilt, and PostgreSQL refuses to change the type of a column a trigger names. A change here
takes effect at the next `migrate`."""

TABLE = "studies_datapoint"
HISTORY_TABLE = "studies_historicaldatapoint"
_PREFIX = "trialops_ref_"


def references() -> dict[str, tuple[tuple[str, str, bool], ...]]:
    """Per child table: (column, referenced table, nullable)."""
    from django.contrib.auth import get_user_model  # noqa: PLC0415 (needs the app registry)

    return {
        TABLE: (("subject_id", "studies_subject", False), ("visit_id", "studies_subjectvisit", False),
                ("form_id", "studies_formdefinition", False), ("item_id", "studies_itemdefinition", False)),
        HISTORY_TABLE: (("history_user_id", get_user_model()._meta.db_table, True),),
    }


def _immutable(table: str) -> bool:
    """A history row is never rewritten, so its user reference may not change at all (Django's
    SET_NULL on deleting a user would otherwise erase who made the change)."""
    return table == HISTORY_TABLE


def _short(table: str) -> str:
    return {TABLE: "dp", HISTORY_TABLE: "hdp"}[table]


def _missing_message(table: str, column: str, parent: str) -> str:
    return f'insert or update on table "{table}" violates foreign key {column}: %s is not present in table "{parent}"'


def _immutable_message(table: str, column: str) -> str:
    return f'the audit trail is append-only: {table}.{column} of a history row cannot change (was %s)'


def _referenced_message(table: str, column: str, parent: str) -> str:
    return (f'update or delete on table "{parent}" violates foreign key {column} of table "{table}": '
            f"%s is still referenced")


def _postgresql_statements() -> list[str]:
    statements = []
    for table, refs in references().items():
        name = f"{_PREFIX}{_short(table)}"
        checks = "".join(f"""
  SELECT array_agg(DISTINCT {column}){' FILTER (WHERE ' + column + ' IS NOT NULL)' if nullable else ''}
    INTO wanted FROM new_rows;
  SELECT count(*) INTO found FROM (SELECT 1 FROM {parent} WHERE id = ANY(wanted) FOR KEY SHARE) AS locked;
  IF found <> cardinality(wanted) THEN
    SELECT w INTO missing FROM unnest(wanted) AS w WHERE NOT EXISTS (SELECT 1 FROM {parent} WHERE id = w) LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = format('{_missing_message(table, column, parent)}', missing);
  END IF;""" for column, parent, nullable in refs)
        if _immutable(table):
            row_checks = "".join(f"""
  RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
    MESSAGE = format('{_immutable_message(table, column)}', OLD.{column});""" for column, _, _ in refs)
        else:
            row_checks = "".join(f"""
  IF NEW.{column} IS NOT NULL THEN
    PERFORM 1 FROM {parent} WHERE id = NEW.{column} FOR KEY SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
        MESSAGE = format('{_missing_message(table, column, parent)}', NEW.{column});
    END IF;
  END IF;""" for column, parent, _ in refs)
        columns = ", ".join(column for column, _, _ in refs)
        changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column, _, _ in refs)
        statements += [
            f"""CREATE OR REPLACE FUNCTION {name}_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  wanted bigint[];
  found bigint;
  missing bigint;
BEGIN{checks}
  RETURN NULL;
END $$""",
            f"""CREATE TRIGGER {name}_inserted AFTER INSERT ON {table}
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {name}_inserted()""",
            f"""CREATE OR REPLACE FUNCTION {name}_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{row_checks}
  RETURN NEW;
END $$""",
            f"""CREATE TRIGGER {name}_changed BEFORE UPDATE OF {columns} ON {table}
FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {name}_changed()"""]

        for column, parent, _ in refs:
            guard = f"{name}_{column}"
            statements += [
                f"""CREATE OR REPLACE FUNCTION {guard}_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE referenced bigint;
BEGIN
  SELECT o.id INTO referenced FROM old_rows AS o
   WHERE EXISTS (SELECT 1 FROM {table} AS child WHERE child.{column} = o.id) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = format('{_referenced_message(table, column, parent)}', referenced);
  END IF;
  RETURN NULL;
END $$""",
                f"""CREATE TRIGGER {guard}_deleted AFTER DELETE ON {parent}
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {guard}_deleted()""",
                # After the statement: a TRUNCATE of both tables together passes.
                f"""CREATE OR REPLACE FUNCTION {guard}_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM {table} WHERE {column} IS NOT NULL) THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = 'cannot truncate table "{parent}": table "{table}" references it (truncate both together)';
  END IF;
  RETURN NULL;
END $$""",
                f"""CREATE TRIGGER {guard}_truncated AFTER TRUNCATE ON {parent}
FOR EACH STATEMENT EXECUTE FUNCTION {guard}_truncated()""",
                f"""CREATE OR REPLACE FUNCTION {guard}_rekeyed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM {table} WHERE {column} = OLD.id) THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = format('{_referenced_message(table, column, parent)}', OLD.id);
  END IF;
  RETURN NEW;
END $$""",
                f"""CREATE TRIGGER {guard}_rekeyed BEFORE UPDATE OF id ON {parent}
FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION {guard}_rekeyed()"""]
    return statements


def _triggers(vendor: str) -> list[tuple[str, str]]:
    """(trigger, table) pairs `install` creates; on PostgreSQL each trigger has a function of its name."""
    pairs = []
    for table, refs in references().items():
        name = f"{_PREFIX}{_short(table)}"
        pairs += [(f"{name}_inserted", table), (f"{name}_changed", table)]
        if vendor == "postgresql":
            pairs += [(f"{name}_{column}_{event}", parent) for column, parent, _ in refs
                      for event in ("deleted", "truncated", "rekeyed")]
    return pairs


def _postgresql_drop() -> list[str]:
    return [statement for trigger, table in _triggers("postgresql")
            for statement in (f"DROP TRIGGER IF EXISTS {trigger} ON {table}", f"DROP FUNCTION IF EXISTS {trigger}()")]


def _sqlite_statements() -> list[str]:
    """Row triggers for inserts and updates. No guard on deleting a parent: SQLite cannot defer a
    trigger to commit, and Django's flush empties the tables in no set order (which the deferred
    foreign keys allowed); there the ORM's PROTECT guards deletes."""
    statements = []
    for table, refs in references().items():
        name = f"{_PREFIX}{_short(table)}"
        missing = " OR ".join(
            f"(NEW.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {parent} WHERE id = NEW.{column}))"
            for column, parent, _ in refs)
        message = f"FOREIGN KEY constraint failed: a row of {table} references a row that does not exist"
        columns = ", ".join(column for column, _, _ in refs)
        statements.append(f"""CREATE TRIGGER {name}_inserted BEFORE INSERT ON {table}
FOR EACH ROW WHEN {missing} BEGIN SELECT RAISE(ABORT, '{message}'); END""")
        if _immutable(table):
            changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column, _, _ in refs)
            message = f"FOREIGN KEY constraint failed: the audit trail is append-only ({table}: {columns})"
            statements.append(f"""CREATE TRIGGER {name}_changed BEFORE UPDATE OF {columns} ON {table}
FOR EACH ROW WHEN {changed} BEGIN SELECT RAISE(ABORT, '{message}'); END""")
        else:
            statements.append(f"""CREATE TRIGGER {name}_changed BEFORE UPDATE OF {columns} ON {table}
FOR EACH ROW WHEN {missing} BEGIN SELECT RAISE(ABORT, '{message}'); END""")
    return statements


def _sqlite_drop() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {trigger}" for trigger, _ in _triggers("sqlite")]


def trigger_names(vendor: str) -> set[str]:
    """The triggers `install` creates on this database vendor (a test asserts they exist: on SQLite,
    a migration that rebuilds one of these tables would silently drop them)."""
    return {trigger for trigger, _ in _triggers(vendor)}


def install(connection) -> None:
    """Create the triggers (after dropping any installed before: running it twice is harmless)."""
    uninstall(connection)
    statements = _postgresql_statements() if connection.vendor == "postgresql" else _sqlite_statements()
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def uninstall(connection) -> None:
    statements = _postgresql_drop() if connection.vendor == "postgresql" else _sqlite_drop()
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


_MIGRATION = ("studies", "0006_data_point_set_based_references")


def _applied(connection) -> bool:
    from django.db.migrations.recorder import MigrationRecorder  # noqa: PLC0415

    recorder = MigrationRecorder(connection)
    return recorder.has_table() and _MIGRATION in recorder.applied_migrations()


def before_migrate(sender, using, plan=None, **kwargs) -> None:
    """pre_migrate: drop the triggers if migrations are about to run."""
    from django.db import connections  # noqa: PLC0415

    if plan and _applied(connections[using]):
        uninstall(connections[using])


def after_migrate(sender, using, **kwargs) -> None:
    """post_migrate (also sent after a test flush): install the triggers once their migration is
    applied, and not while it is unapplied (migrating back before it)."""
    from django.db import connections  # noqa: PLC0415

    if _applied(connections[using]):
        install(connections[using])
