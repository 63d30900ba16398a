/* pgx: see pgx.h. */
#include "pg/pgx.h"

#include <stdio.h>
#include <string.h>

PGconn *pgx_connect(const char *conninfo, const char *application_name, fb_err *err) {
    return pgx_connect_db(conninfo, NULL, application_name, err);
}

PGconn *pgx_connect_db(const char *conninfo, const char *dbname, const char *application_name, fb_err *err) {
    if (!conninfo || !*conninfo) {
        fb_err_set(err, FB_ERR_USAGE, "no PostgreSQL connection given: set --pg CONNINFO or FB_PG");
        return NULL;
    }
    /* expand_dbname: the first dbname is conninfo itself (keywords or a URI); a second one overrides its dbname */
    const char *const kw[] = {"dbname", dbname ? "dbname" : NULL, NULL};
    const char *const val[] = {conninfo, dbname, NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (!c) {
        fb_err_set(err, FB_ERR_NOMEM, "could not allocate a PostgreSQL connection");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
        fb_err_set(err, FB_ERR_TRANSIENT, "could not connect to PostgreSQL: %s (check --pg / FB_PG and that the server runs)",
                   msg);
        PQfinish(c);
        return NULL;
    }
    if (application_name) {
        const char *params[1] = {application_name};
        PGresult *r = PQexecParams(c, "SELECT set_config('application_name', $1, false)", 1, NULL, params, NULL, NULL, 0);
        PQclear(r);
    }
    return c;
}

int pgx_quote_ident(const char *name, char *out, size_t cap) {
    size_t o = 0;
    if (cap < 3) return -1;
    out[o++] = '"';
    for (const char *p = name; *p; p++) {
        if (*p == '"') {
            if (o + 2 >= cap) return -1;
            out[o++] = '"';
        }
        if (o + 1 >= cap) return -1;
        out[o++] = *p;
    }
    if (o + 2 > cap) return -1;
    out[o++] = '"';
    out[o] = '\0';
    return 0;
}

int pgx_qualified(const char *schema, const char *table, char *out, size_t cap) {
    if (pgx_quote_ident(schema, out, cap) != 0) return -1;
    size_t n = strlen(out);
    if (n + 2 >= cap) return -1;
    out[n++] = '.';
    return pgx_quote_ident(table, out + n, cap - n);
}

#define PGX_NAME_MAX 63                      /* NAMEDATALEN - 1 */
#define PGX_QUOTED_MAX (2 * PGX_NAME_MAX + 3) /* every byte a doubled quote, two quotes and the NUL */

void pgx_sb_ident(fb_sbuf *b, const char *name) {
    char q[PGX_QUOTED_MAX];
    if (strlen(name) > PGX_NAME_MAX || pgx_quote_ident(name, q, sizeof q) != 0) b->oom = 1;
    else fb_sbuf_puts(b, q);
}

void pgx_sb_qualified(fb_sbuf *b, const char *schema, const char *table) {
    pgx_sb_ident(b, schema);
    fb_sbuf_puts(b, ".");
    pgx_sb_ident(b, table);
}

char *pgx_ident_dup(const char *name) {
    fb_sbuf b = {0};
    pgx_sb_ident(&b, name);
    return fb_sbuf_take(&b);
}

char *pgx_qualified_dup(const char *schema, const char *table) {
    fb_sbuf b = {0};
    pgx_sb_qualified(&b, schema, table);
    return fb_sbuf_take(&b);
}

int pgx_quote_literal(const char *s, char *out, size_t cap) {
    size_t o = 0;
    int has_backslash = strchr(s, '\\') != NULL;
    if (has_backslash) {
        if (o + 1 >= cap) return -1;
        out[o++] = 'E';
    }
    if (o + 1 >= cap) return -1;
    out[o++] = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'' || *p == '\\') {
            if (o + 1 >= cap) return -1;
            out[o++] = *p;
        }
        if (o + 1 >= cap) return -1;
        out[o++] = *p;
    }
    if (o + 2 > cap) return -1;
    out[o++] = '\'';
    out[o] = '\0';
    return 0;
}

/* The one list of SQLSTATEs worth a retry. The first three leave the connection usable: serialization failure,
 * deadlock, lock not available (lock_timeout). The rest need patience or a new connection: query canceled
 * (statement_timeout), the server shutting down or restarting (57P01-57P03), connection exceptions (08xxx) and
 * insufficient resources (53xxx: disk full, out of memory, too many connections). */
static const char *const pgx_retry_now[] = {"40001", "40P01", "55P03"};
static const char *const pgx_retry_later[] = {"57014", "57P01", "57P02", "57P03"};

static int pgx_listed(const char *st, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(st, list[i]) == 0) return 1;
    return 0;
}

int pgx_sqlstate_retry_now(const char *st) {
    return st && pgx_listed(st, pgx_retry_now, sizeof pgx_retry_now / sizeof pgx_retry_now[0]);
}

int pgx_sqlstate_duplicate(const char *st) {
    static const char *const dup[] = {"42P07", "42710", "42P06", "42723", "42P04", "42701", "42712", "23505"};
    return st && pgx_listed(st, dup, sizeof dup / sizeof dup[0]);
}

fb_code pgx_sqlstate_code(const char *st) {
    if (!st || strlen(st) != 5) return FB_ERR_PG;
    if (pgx_sqlstate_retry_now(st) || pgx_listed(st, pgx_retry_later, sizeof pgx_retry_later / sizeof pgx_retry_later[0]))
        return FB_ERR_TRANSIENT;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "53", 2) == 0) return FB_ERR_TRANSIENT;
    return FB_ERR_PG;
}

fb_code pgx_check(PGconn *c, PGresult *res, ExecStatusType want, const char *what, fb_err *err) {
    if (res && PQresultStatus(res) == want) return FB_OK;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char conn_msg[512] = "";
    if (!prim) {
        snprintf(conn_msg, sizeof conn_msg, "%s", PQerrorMessage(c));
        size_t n = strlen(conn_msg);
        while (n && (conn_msg[n - 1] == '\n' || conn_msg[n - 1] == ' ')) conn_msg[--n] = '\0';
    }
    fb_code code = st ? pgx_sqlstate_code(st) : (PQstatus(c) == CONNECTION_OK ? FB_ERR_PG : FB_ERR_TRANSIENT);
    fb_err_set(err, code, "%s failed: %s%s%s%s%s%s%s", what, prim ? prim : conn_msg, st ? " (SQLSTATE " : "",
               st ? st : "", st ? ")" : "", detail ? "; " : "", detail ? detail : "", hint ? "; hint: " : "");
    if (hint && err) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, "%s", hint);
    }
    if (st && err) snprintf(err->sqlstate, sizeof err->sqlstate, "%s", st);
    if (res) PQclear(res);
    return code;
}

fb_code pgx_exec(PGconn *c, const char *sql, const char *what, fb_err *err) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        PQclear(r);
        return FB_OK;
    }
    return pgx_check(c, r, PGRES_COMMAND_OK, what, err);
}
