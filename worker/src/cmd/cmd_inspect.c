/* cmd_inspect: `fusion-backup inspect ARTIFACT [--json]`: prints the manifest (tables, rows, sizes, times),
 * readably or as JSON. The manifest is encrypted like the data (table names are information too), so this needs
 * the secret key; it authenticates the manifest but does not read the table data (use verify for that). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_index.h"
#include "artifact/arc_reader.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_time.h"
#include "artifact/arc_open.h"

static void cmd_inspect_text(const arc_manifest *m, const arc_index *ix, const stor_rfile *f) {
    char snap[40], start[40], end[40];
    int64_t rows = 0, raw = 0, stored = 0;
    for (size_t i = 0; i < m->n_tables; i++) {
        rows += m->tables[i].rows;
        raw += m->tables[i].raw_bytes;
        stored += m->tables[i].stored_bytes;
    }
    fb_time_format_iso(m->snapshot_ms, snap, sizeof snap);
    fb_time_format_iso(m->started_ms, start, sizeof start);
    fb_time_format_iso(m->completed_ms, end, sizeof end);
    printf("artifact     %s (%llu bytes, format %lld, %s)\n", f->name, (unsigned long long)f->size,
           (long long)m->format, m->tool ? m->tool : "?");
    printf("job          %s (record %lld, configuration %lld \"%s\")\n", m->job_id ? m->job_id : "?",
           (long long)m->record_id, (long long)m->config_id, m->config_name ? m->config_name : "");
    printf("type         %s", m->backup_type ? m->backup_type : "?");
    if (m->requested_type && m->backup_type && strcmp(m->requested_type, m->backup_type) != 0)
        printf(" (requested %s, ran as FULL)", m->requested_type);
    if (m->base_job) printf(" on base %s", m->base_job);
    printf("\ndatabase     \"%s\" on PostgreSQL %s\n", m->database ? m->database : "?",
           m->server_version ? m->server_version : "?");
    printf("snapshot     %s\n", snap);
    printf("ran          %s .. %s (%.1f s), zstd level %lld\n", start, end, (m->completed_ms - m->started_ms) / 1000.0,
           (long long)m->zstd_level);
    if (m->schema)
        printf("schema       archive of %lld bytes stored in %llu bytes, by %s\n", (long long)m->schema->raw_bytes,
               (unsigned long long)m->schema->length,
               m->schema->pg_dump_version ? m->schema->pg_dump_version : "?");
    else
        printf("schema       no schema archive (format %lld): restore --create rebuilds only tables, sequences, "
               "indexes and keys\n", (long long)m->format);
    printf("tables       %zu, %lld rows, %lld bytes of COPY text stored in %lld bytes (%.1f%%)\n\n", m->n_tables,
           (long long)rows, (long long)raw, (long long)stored, raw ? 100.0 * (double)stored / (double)raw : 0.0);
    printf("%12s %14s %12s  %s\n", "rows", "raw bytes", "stored", "table");
    for (size_t i = 0; i < m->n_tables; i++) {
        const arc_table *t = &m->tables[i];
        arc_table_kind kind = arc_table_kind_of(m, t);
        printf("%12lld %14lld %12lld  \"%s\".\"%s\"%s%s\n", (long long)t->rows, (long long)t->raw_bytes,
               (long long)t->stored_bytes, t->schema, t->name,
               kind == ARC_TABLE_REFERENCED ? "  unchanged, stored in " : "",
               kind == ARC_TABLE_REFERENCED ? t->stored_in : "");
        const arc_index_table *it = kind == ARC_TABLE_ASSEMBLED && ix ? arc_index_find(ix, t->schema, t->name) : NULL;
        if (it) { /* format 5: the chunk list is in the index's records; its head says which backups they are in */
            printf("%12s %14s %12s  assembled from %llu chunks, in this backup and %zu other%s\n", "", "", "",
                   (unsigned long long)it->rec_count, it->n_deps, it->n_deps == 1 ? "" : "s");
        } else if (kind == ARC_TABLE_ASSEMBLED) {
            size_t here = 0;
            for (size_t k = 0; k < t->n_chunks; k++)
                if (!t->chunks[k].src || (m->job_id && strcmp(t->chunks[k].src, m->job_id) == 0)) here++;
            printf("%12s %14s %12s  assembled from %zu chunks, %zu of them stored here\n", "", "", "", t->n_chunks,
                   here);
        }
    }
}

static const char cmd_inspect_usage[] =
    "usage: fusion-backup inspect ARTIFACT [--json] [--secret-key FILE]\n"
    "  prints the artifact's manifest: ids, times, tables with rows and sizes (--json: all of it)\n";

int cmd_inspect(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *path = NULL;
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    fb_keyring kr = {0};
    arc_trust trust;
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_INSPECT, cmd_inspect_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    int json = cfg.json != 0;
    if (!rc && argc > 1) path = argv[1];
    if (!rc && argc > 2)
        rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (usage: inspect ARTIFACT [--json])", argv[2]);
    if (!rc && !path) rc = fb_err_set(&err, FB_ERR_USAGE, "inspect needs the artifact's path");
    if (!rc) rc = arc_open_trust(&cfg, &kr, &trust, &err);
    if (!rc) rc = arc_open_artifact(path, cfg.secret_key, &trust, &f, &r, &err);
    if (!rc && json) {
        size_t len = 0;
        const void *raw = arc_reader_manifest_raw(r, &len);
        rc = arc_manifest_print_json(raw, len, stdout, &err);
    } else if (!rc) {
        arc_open_describe(r, stdout);
        cmd_inspect_text(arc_reader_manifest(r), arc_reader_index(r), f);
    }
    if (rc) fprintf(stderr, "fusion-backup inspect: %s\n", err.msg);
    arc_reader_free(r);
    stor_rfile_close(f);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
