/* dump_scratch: see dump_scratch.h. */
#include "dump/dump_scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump/dump_catalog.h"
#include "pg/pgx.h"

PGconn *dump_connect_db(const char *conninfo, const char *dbname, const char *application_name, fb_err *err) {
    const char *keys[] = {"dbname", "dbname", "application_name", NULL};
    const char *vals[] = {conninfo, dbname, application_name, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        fb_err_set(err, FB_ERR_TRANSIENT, "could not connect to database \"%s\": %s", dbname,
                   c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void dump_scratch_quiet(void *arg, const char *msg) {
    (void)arg;
    (void)msg; /* "database ... does not exist, skipping" is expected */
}

static fb_code dump_scratch_sql(const char *conninfo, const char *fmt, const char *name, const char *what,
                                fb_err *err) {
    PGconn *c = pgx_connect(conninfo, "fusion-backup scratch", err);
    if (!c) return err ? err->code : FB_ERR_TRANSIENT;
    PQsetNoticeProcessor(c, dump_scratch_quiet, NULL);
    char *qn = pgx_ident_dup(name);
    char *sql = qn ? dump_strf(fmt, qn) : NULL;
    fb_code rc = sql ? pgx_exec(c, sql, what, err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    free(qn);
    free(sql);
    PQfinish(c);
    return rc;
}

fb_code dump_scratch_create(const char *conninfo, const char *name, PGconn **out, fb_err *err) {
    *out = NULL;
    if (!conninfo || !*conninfo)
        return fb_err_set(err, FB_ERR_USAGE, "a restore check needs a scratch server: set --scratch-pg CONNINFO or "
                          "FB_SCRATCH_PG (a role that may CREATE DATABASE)");
    fb_code rc = dump_scratch_sql(conninfo, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name,
                                  "dropping a leftover scratch database", err);
    if (rc == FB_OK) rc = dump_scratch_sql(conninfo, "CREATE DATABASE %s", name, "creating a scratch database", err);
    if (rc) return rc;
    *out = dump_connect_db(conninfo, name, "fusion-backup verify", err);
    if (!*out) {
        dump_scratch_drop(conninfo, name, NULL, NULL);
        return err ? err->code : FB_ERR_TRANSIENT;
    }
    return FB_OK;
}

fb_code dump_scratch_drop(const char *conninfo, const char *name, PGconn *c, fb_err *err) {
    if (c) PQfinish(c);
    return dump_scratch_sql(conninfo, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name, "dropping the scratch database",
                            err);
}
