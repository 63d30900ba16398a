-- The worker's database role: least privilege for fusion-backup-worker (backup, archive, recorder).
--
-- Run as the database owner (or a superuser), in the Fusion database, after Django's migrations:
--     psql -v ON_ERROR_STOP=1 -v worker_role=fusion_backup_worker -d fusion -f deploy/sql/roles.sql
-- then give the role a password (ALTER ROLE ... PASSWORD, or a client certificate) and put it in the worker's
-- --pg conninfo. Re-running it is harmless (it re-applies the grants; run it again after a migration adds tables:
-- ALTER DEFAULT PRIVILEGES below covers tables created later by the role that runs this file).
--
-- What the role can do, and why (SECURITY.md has the threat model):
-- - read every table of every non-system schema: backups COPY them and take
--   ACCESS SHARE locks; archival reads the rows it moves;
-- - DELETE and UPDATE Fusion's own tables: archival deletes archived rows (and CASCADE children) and sets
--   SET_NULL columns; which rows may go is decided by ArchivePolicy rows the role can only READ;
-- - INSERT into ArchivedRecord, DELETE from it (the purge of a policy with delete_after_days), UPDATE
--   BackupRecord and ArchiveRun (the recorder), nothing else on the app's own tables: it cannot create, change or activate a
--   policy or a configuration, so no message it receives can widen what it may archive or where it writes;
-- - nothing in pg_catalog or information_schema beyond what every role may read: it is not a superuser, owns
--   no table, cannot create roles or databases, and does not bypass row-level security.
-- - with -v capture=on only: REPLICATION, for change capture (capture-databases, `fusion-backup capture`): a
--   logical walsender streams the database's changes from a slot, and PostgreSQL allows that only to roles WITH
--   REPLICATION (or superusers). A logical walsender is matched in pg_hba.conf by its database like any
--   connection; a `replication` line is only for physical replication, which would let the role read all WAL of
--   the cluster: give the worker's role no such line. Without the variable the role stays NOREPLICATION
--   (re-running this file without it takes REPLICATION away again).
-- What it cannot protect against: a row-level DELETE on a Fusion table is what archival is; a stolen worker
-- password can delete live Fusion rows directly (the archive checks live in the worker, not in the database).
-- Narrow the DELETE/UPDATE grants to the tables your policies name if that matters more than convenience.
\if :{?worker_role}
\else
\set worker_role fusion_backup_worker
\endif

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'worker_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'worker_role') \gexec
ALTER ROLE :"worker_role" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\if :{?capture}
ALTER ROLE :"worker_role" REPLICATION;
\endif

GRANT CONNECT ON DATABASE :"DBNAME" TO :"worker_role";
-- Every schema of the database except PostgreSQL's own (Fusion uses public; other apps may add schemas: run this
-- file again after creating one).
SELECT format('GRANT USAGE ON SCHEMA %1$I TO %2$I; '
              'GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA %1$I TO %2$I; '
              'GRANT SELECT ON ALL SEQUENCES IN SCHEMA %1$I TO %2$I; '
              'ALTER DEFAULT PRIVILEGES IN SCHEMA %1$I GRANT SELECT, DELETE, UPDATE ON TABLES TO %2$I; '
              'ALTER DEFAULT PRIVILEGES IN SCHEMA %1$I GRANT SELECT ON SEQUENCES TO %2$I',
              nspname, :'worker_role')
FROM pg_namespace
WHERE nspname NOT IN ('information_schema') AND nspname NOT LIKE 'pg\_%' \gexec

-- The app's own tables: back to read-only, then exactly what the worker writes.
REVOKE DELETE, UPDATE ON backup_archive_backupconfiguration, backup_archive_archivepolicy,
    backup_archive_backuprecord, backup_archive_archiverun, backup_archive_archivedrecord FROM :"worker_role";
GRANT UPDATE ON backup_archive_backuprecord, backup_archive_archiverun TO :"worker_role";
GRANT INSERT, DELETE ON backup_archive_archivedrecord TO :"worker_role";
-- Its id sequence (identity or serial, depending on the Django version that made the table).
SELECT format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence('backup_archive_archivedrecord', 'id'),
              :'worker_role') \gexec
-- Django's own bookkeeping tables are never archived: read-only as well.
SELECT format('REVOKE DELETE, UPDATE ON %I.%I FROM %I', schemaname, tablename, :'worker_role')
FROM pg_tables
WHERE schemaname = 'public' AND (tablename LIKE 'django\_%' OR tablename LIKE 'auth\_permission'
                                 OR tablename LIKE 'auth\_group%') \gexec
