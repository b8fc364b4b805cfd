"""Least privilege: the BlobDeltaOperator role.

Members of ``BlobDeltaOperator`` run deltas through ``usp_BlobDelta_RunOperator`` and read the
run tables (``BlobDeltaRun``, ``BlobDeltaRunStep``); nothing else. This revision creates the
role and its SELECT grants. The rights that belong to procedures (EXECUTE; on SQL Server the
certificate that signs them and the certificate users in the job database and in every
configured database) follow the procedures: ``dbtools.deploy.privileges.apply_engine_access`` renews
them after every deployment at head.

On PostgreSQL a second NOLOGIN role, ``BlobDeltaEngine``, owns the engine's SECURITY DEFINER
functions and holds the engine's rights (``templates/postgresql/engine_access.sql``).
PostgreSQL roles belong to the cluster, not the database: the role is created only when it
does not exist yet (a superuser may create it beforehand; otherwise the deploying user needs
CREATEROLE), and the downgrade drops it only when no other database still grants it anything.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from dbtools.deploy.migration_helpers import current_engine
from dbtools.deploy.privileges import ENGINE_ROLE, READ_TABLES, ROLE, execute_batch, render_access_template
from dbtools.deploy.repeatable import sql_text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    engine = current_engine()
    role = engine.quote(ROLE)
    if engine.name == "mssql":
        op.execute(sql_text(
            f"IF DATABASE_PRINCIPAL_ID(N'{ROLE}') IS NULL\n"
            f"    CREATE ROLE {role} AUTHORIZATION [dbo]"
        ))
    else:
        for name in (ROLE, ENGINE_ROLE):
            op.execute(sql_text(
                "DO $dbtools$\nBEGIN\n"
                f"    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN\n"
                f"        CREATE ROLE {engine.quote(name)} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;\n"
                "    END IF;\n"
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN\n"
                "    NULL; -- created at the same moment by a migration of another database\n"
                "END\n$dbtools$"
            ))
        # The deploying user must be able to act as the owner of the engine's functions to
        # replace them at the next deployment (a superuser always can).
        op.execute(sql_text(
            "DO $dbtools$\nBEGIN\n"
            "    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER)\n"
            f"       AND NOT pg_catalog.pg_has_role(CURRENT_USER, '{ENGINE_ROLE}', 'USAGE') THEN\n"
            f"        EXECUTE format('GRANT %I TO %I', '{ENGINE_ROLE}', CURRENT_USER);\n"
            "    END IF;\n"
            "END\n$dbtools$"
        ))
        op.execute(sql_text(f"GRANT USAGE ON SCHEMA {engine.quote(engine.job_schema)} TO {role}"))
    for table in READ_TABLES:
        on = f"OBJECT::{engine.job_object(table)}" if engine.name == "mssql" else engine.job_object(table)
        op.execute(sql_text(f"GRANT SELECT ON {on} TO {role}"))


def downgrade() -> None:
    engine = current_engine()
    role = engine.quote(ROLE)
    if engine.name == "mssql":
        execute_batch(op.get_context(), engine, render_access_template(engine, "engine_access_drop.sql"))
        op.execute(sql_text(
            "DECLARE @Member sysname;\n"
            "DECLARE @SqlDropMember nvarchar(max);\n"
            "WHILE 1 = 1\n"
            "BEGIN\n"
            "    SET @Member = NULL;\n"
            "    SELECT TOP (1) @Member = m.name\n"
            "    FROM sys.database_role_members AS rm\n"
            "    JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id\n"
            f"    WHERE rm.role_principal_id = DATABASE_PRINCIPAL_ID(N'{ROLE}');\n"
            "    IF @Member IS NULL BREAK;\n"
            f"    SET @SqlDropMember = N'ALTER ROLE {role} DROP MEMBER ' + QUOTENAME(@Member);\n"
            "    EXEC sys.sp_executesql @SqlDropMember;\n"
            "END;\n"
            f"IF DATABASE_PRINCIPAL_ID(N'{ROLE}') IS NOT NULL\n"
            f"    DROP ROLE {role}"
        ))
        return
    # DROP OWNED removes, in this database only, what each role owns (the engine's functions,
    # which the package's downgrade drops anyway) and every right granted to it. The roles
    # themselves belong to the cluster: dropped only when no other database still uses them.
    for name in (ROLE, ENGINE_ROLE):
        op.execute(sql_text(
            "DO $dbtools$\nBEGIN\n"
            f"    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN\n"
            f"        DROP OWNED BY {engine.quote(name)};\n"
            "        BEGIN\n"
            f"            DROP ROLE {engine.quote(name)};\n"
            "        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN\n"
            f"            RAISE NOTICE 'role {name} kept: %', SQLERRM;\n"
            "        END;\n"
            "    END IF;\n"
            "END\n$dbtools$"
        ))
