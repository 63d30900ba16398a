/* dump_schema: pg_dump for the schema archive, pg_restore for its replay (see dump_schema.h). */
#include "dump/dump_schema.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_sbuf.h"
#include "pg/pgx.h"

fb_code dump_schema_tool_version(const char *prog, const char *setting, char *ver, size_t cap, int *major, fb_err *err) {
    const char *argv[] = {prog, "--version", NULL};
    char *out = NULL;
    fb_code rc = dump_proc_capture(argv, NULL, setting, -1, &out, NULL, err);
    if (rc) return rc;
    out[strcspn(out, "\n")] = '\0';
    snprintf(ver, cap, "%s", out);
    /* "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": the first number after ") " */
    const char *p = strstr(out, ") ");
    *major = p ? atoi(p + 2) : 0;
    if (*major <= 0)
        rc = fb_err_set(err, FB_ERR_USAGE, "\"%s --version\" printed \"%s\", not a PostgreSQL client version (check "
                        "the %s setting)", prog, out, setting);
    free(out);
    return rc;
}

/* 'value' with ' and \ escaped, as conninfo strings want. */
static void ds_conn_value(fb_sbuf *b, const char *v) {
    fb_sbuf_puts(b, "'");
    for (; *v; v++) {
        if (*v == '\'' || *v == '\\') fb_sbuf_put(b, "\\", 1);
        fb_sbuf_put(b, v, 1);
    }
    fb_sbuf_puts(b, "' ");
}

/* The conninfo of c for a child program, without its password; a password goes into a new passfile whose path
 * is written to passfile (cap bytes; "" when none). */
static fb_code ds_child_conninfo(PGconn *c, char **out, char *passfile, size_t cap, fb_err *err) {
    PQconninfoOption *opts = PQconninfo(c);
    fb_sbuf b = {0};
    const char *password = NULL;
    fb_code rc = FB_OK;
    passfile[0] = '\0';
    if (!opts) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) password = o->val;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "password") == 0) continue;
        if (strcmp(o->keyword, "application_name") == 0 || strcmp(o->keyword, "fallback_application_name") == 0)
            continue;
        if (password && strcmp(o->keyword, "passfile") == 0) continue;
        fb_sbuf_printf(&b, "%s=", o->keyword);
        ds_conn_value(&b, o->val);
    }
    if (password) {
        /* "*:*:*:*:password" (':' and '\' escaped): the file is this child's alone, so any host matches. */
        const char *tmp = getenv("TMPDIR");
        snprintf(passfile, cap, "%s/fusion-backup-pgpass-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        int fd = mkstemp(passfile); /* mode 0600 */
        fb_sbuf pw = {0};
        fb_sbuf_puts(&pw, "*:*:*:*:");
        for (const char *p = password; *p; p++) {
            if (*p == ':' || *p == '\\') fb_sbuf_put(&pw, "\\", 1);
            fb_sbuf_put(&pw, p, 1);
        }
        fb_sbuf_puts(&pw, "\n");
        if (fd < 0 || pw.oom || write(fd, pw.p, pw.len) != (ssize_t)pw.len) {
            rc = fb_err_set(err, FB_ERR_IO, "could not write a temporary passfile \"%s\" for pg_dump: %s", passfile,
                            fd < 0 ? strerror(errno) : "short write");
            if (fd >= 0) unlink(passfile);
            passfile[0] = '\0';
        }
        if (pw.p) sodium_memzero(pw.p, pw.len);
        fb_sbuf_free(&pw);
        if (fd >= 0) close(fd);
        if (!rc) {
            fb_sbuf_puts(&b, "passfile=");
            ds_conn_value(&b, passfile);
        }
    }
    PQconninfoFree(opts);
    if (!rc && !(*out = fb_sbuf_take(&b))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_sbuf_free(&b);
    if (rc && passfile[0]) {
        unlink(passfile);
        passfile[0] = '\0';
    }
    return rc;
}

/* A pg_dump pattern matching exactly schema.name: both quoted (inside quotes, * ? . are literal; " is doubled). */
static void ds_pattern(fb_sbuf *b, const char *schema, const char *name) {
    const char *parts[2] = {schema, name};
    fb_sbuf_puts(b, "--exclude-table-data=");
    for (int i = 0; i < 2; i++) {
        if (i) fb_sbuf_puts(b, ".");
        fb_sbuf_puts(b, "\"");
        for (const char *p = parts[i]; *p; p++) {
            if (*p == '"') fb_sbuf_put(b, "\"", 1);
            fb_sbuf_put(b, p, 1);
        }
        fb_sbuf_puts(b, "\"");
    }
}

fb_code dump_schema_dump(PGconn *c, const char *pg_dump, long long lock_timeout_ms, dump_proc_sink sink, void *opaque,
                         char *ver, size_t ver_cap, fb_err *err) {
    fb_code rc = FB_OK;
    PGresult *r = NULL;
    char **pats = NULL, *conninfo = NULL, snapshot[128], passfile[512] = "", ltw[48] = "";
    const char **argv = NULL;
    int n = 0, major = 0, server_major = PQserverVersion(c) / 10000;

    if ((rc = dump_schema_tool_version(pg_dump, "pg-dump (FB_PG_DUMP)", ver, ver_cap, &major, err))) goto out;
    if (major < server_major) {
        rc = fb_err_set(err, FB_ERR_USAGE, "%s is version %d but the server is %d: pg_dump must be at least the "
                        "server's major version (install a newer PostgreSQL client and set pg-dump / FB_PG_DUMP)",
                        pg_dump, major, server_major);
        goto out;
    }
    /* Every table whose rows the worker (not pg_dump) carries: ordinary and partitioned tables. Sequences and
     * materialized views are not in the list, so their SEQUENCE SET and refresh entries stay in the archive. */
    r = PQexec(c, "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
                  "c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND "
                  "n.nspname !~ '^pg_' ORDER BY 1, 2");
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "listing the tables for pg_dump", err))) {
        r = NULL;
        goto out;
    }
    n = PQntuples(r);
    pats = calloc((size_t)n + 1, sizeof *pats);
    argv = calloc((size_t)n + 16, sizeof *argv);
    if (!pats || !argv) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        fb_sbuf b = {0};
        ds_pattern(&b, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        if (!(pats[i] = fb_sbuf_take(&b))) {
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    PQclear(r);
    r = PQexec(c, "SELECT pg_catalog.pg_export_snapshot()");
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "exporting the snapshot for pg_dump", err))) {
        r = NULL;
        goto out;
    }
    snprintf(snapshot, sizeof snapshot, "--snapshot=%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;
    if ((rc = ds_child_conninfo(c, &conninfo, passfile, sizeof passfile, err))) goto out;
    {
        fb_sbuf d = {0};
        fb_sbuf_puts(&d, "--dbname=");
        fb_sbuf_puts(&d, conninfo);
        free(conninfo);
        if (!(conninfo = fb_sbuf_take(&d))) {
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    int k = 0;
    argv[k++] = pg_dump;
    argv[k++] = "--format=custom";
    argv[k++] = "--compress=0"; /* the artifact's zstd compresses it */
    argv[k++] = "-b"; /* large objects, with their data (--blobs; PostgreSQL 16 also calls it --large-objects) */
    argv[k++] = "--no-sync";
    argv[k++] = snapshot;
    if (lock_timeout_ms > 0) {
        snprintf(ltw, sizeof ltw, "--lock-wait-timeout=%lld", lock_timeout_ms);
        argv[k++] = ltw;
    }
    argv[k++] = conninfo;
    for (int i = 0; i < n; i++) argv[k++] = pats[i];
    argv[k] = NULL;
    rc = dump_proc_run(argv, NULL, "pg-dump (FB_PG_DUMP)", sink, opaque, err);
    if (rc) fb_err_prefix(err, "taking the schema archive: ");
out:
    if (passfile[0]) unlink(passfile);
    if (r) PQclear(r);
    for (int i = 0; pats && i < n; i++) free(pats[i]);
    free(pats);
    free(argv);
    free(conninfo);
    return rc;
}

fb_code dump_schema_section_sql(const dump_schema_opts *o, int fd, const char *section, char **sql, fb_err *err) {
    char sec[64];
    const char *argv[12];
    int k = 0;
    snprintf(sec, sizeof sec, "--section=%s", section);
    argv[k++] = o->pg_restore;
    argv[k++] = "--file=-";
    argv[k++] = "--single-transaction"; /* one BEGIN/COMMIT pair for the whole script, none around large objects */
    argv[k++] = sec;
    if (o->no_owner) argv[k++] = "--no-owner";
    if (o->no_privileges) argv[k++] = "--no-privileges";
    argv[k++] = "/dev/fd/3"; /* fd, an unlinked file, becomes the child's fd 3 */
    argv[k] = NULL;
    fb_code rc = dump_proc_capture(argv, NULL, "pg-restore (FB_PG_RESTORE)", fd, sql, NULL, err);
    if (rc) fb_err_prefix(err, "reading the %s section of the schema archive: ", section);
    return rc;
}

/* Blanks line [p, end of line) with spaces. */
static void ds_blank_line(char *p) {
    for (; *p && *p != '\n'; p++) *p = ' ';
}

fb_code dump_schema_exec(PGconn *c, char *sql, const char *what, fb_err *err) {
    char *begin = NULL, *commit = NULL;
    /* The first line that is exactly BEGIN; and the last that is exactly COMMIT; are pg_restore -1's own; before
     * and after them there are only comments, blank lines and psql meta-commands (\restrict, \unrestrict). */
    for (char *line = sql; *line; ) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (!begin && len == 6 && strncmp(line, "BEGIN;", 6) == 0) begin = line;
        else if (begin && len == 7 && strncmp(line, "COMMIT;", 7) == 0) commit = line;
        else if (!begin && line[0] == '\\') ds_blank_line(line);
        if (!nl) break;
        line = nl + 1;
    }
    if (!begin || !commit)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: pg_restore's script has no BEGIN/COMMIT pair (an unexpected "
                          "pg_restore version?)", what);
    for (char *line = commit; *line; ) {
        char *nl = strchr(line, '\n');
        if (line[0] == '\\') ds_blank_line(line);
        else if (line != commit && line[0] && line[0] != '\n' && strncmp(line, "--", 2) != 0)
            return fb_err_set(err, FB_ERR_FORMAT, "%s: pg_restore's script goes on after its COMMIT", what);
        if (!nl) break;
        line = nl + 1;
    }
    ds_blank_line(begin);
    ds_blank_line(commit);
    return pgx_exec(c, sql, what, err);
}
