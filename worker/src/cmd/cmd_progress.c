/* cmd_progress: see cmd_progress.h. */
#include "cmd/cmd_progress.h"

#include <string.h>

static int cp_selected(const arc_table *t, const arc_tref *only, size_t n_only) {
    if (n_only == 0) return 1;
    for (size_t i = 0; i < n_only; i++)
        if (strcmp(only[i].schema ? only[i].schema : "public", t->schema) == 0 && strcmp(only[i].name, t->name) == 0)
            return 1;
    return 0;
}

fb_progress *cmd_progress_reading(const fb_config *cfg, const char *what, const arc_manifest *m, const arc_tref *only,
                                  size_t n_only, int count_tables) {
    fb_progress *p = fb_progress_new(cfg, what, "tables", 0);
    if (!p || !m) return p;
    int64_t rows = 0, bytes = 0, n = 0;
    for (size_t i = 0; i < m->n_tables; i++) {
        if (!cp_selected(&m->tables[i], only, n_only)) continue;
        rows += m->tables[i].rows;
        bytes += m->tables[i].raw_bytes;
        n++;
    }
    fb_progress_total(p, rows, bytes, count_tables ? n : 0);
    fb_progress_attach(p);
    return p;
}
