/* cmd_progress: the progress display (common/fb_progress.h) of a command that reads an artifact's tables
 * (restore, verify), with its totals from the manifest. Private to cmd/. */
#ifndef CMD_PROGRESS_H
#define CMD_PROGRESS_H

#include <stddef.h>

#include "artifact/arc_manifest.h"
#include "common/fb_config.h"
#include "common/fb_progress.h"

/* A new display for `what` whose totals are the rows and COPY text bytes of m's tables (only those in `only`
 * when n_only > 0; a schema NULL there is "public"), counting tables when count_tables. It is attached: the
 * artifact reader feeds it every byte it decompresses. NULL when progress is off. The caller ends it with
 * fb_progress_done and fb_progress_free. */
fb_progress *cmd_progress_reading(const fb_config *cfg, const char *what, const arc_manifest *m, const arc_tref *only,
                                  size_t n_only, int count_tables);

#endif
