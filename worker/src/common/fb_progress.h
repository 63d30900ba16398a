/* fb_progress: how far a long CLI command (backup, restore, verify) has got, on stderr.
 *
 * What it shows: rows, bytes (COPY text, uncompressed), items (tables) done, the rate (bytes per second since the
 * start) and an ETA: from bytes when their total is known (restore and verify read it from the manifest), else
 * from items (a backup knows how many tables it has, not how big they are).
 * How (setting `progress`):
 *   auto   a bar redrawn in place with \r, at most 10 times a second, when stderr is a terminal; otherwise one
 *          plain line every progress-lines-ms (a JSON object per line with --log-format json or a command's
 *          --json), never a \r,
 *          so a log file or a CI log stays readable;
 *   bar, lines  one of the two whatever stderr is; off  nothing.
 * A final line says how it ended. Nothing goes to stdout, which carries the command's result.
 *
 * Feeding it: the command that owns the handle calls fb_progress_update (absolute counters, e.g. from a job's
 * progress callback). Code deep in a read path that should not carry a handle (the artifact reader, shared by
 * restore and verify) calls fb_progress_data with the bytes it produced; they go to the one handle that
 * fb_progress_attach made current, and nowhere when none is (the worker never attaches one). Counters are atomic,
 * so the restore's loader threads may feed it at once; drawing happens on whichever thread finds it due.
 */
#ifndef FB_PROGRESS_H
#define FB_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_config.h"

typedef struct fb_progress fb_progress;

/* A new display for command `what` ("restore") counting `unit` items ("tables"), configured by cfg (progress,
 * progress-lines-ms, log-format); json: the command was asked for JSON output (--json), so its lines are JSON
 * too. Returns NULL when progress is off (every function accepts NULL) or memory is
 * short: progress is never a reason to fail. what and unit must outlive the handle. */
fb_progress *fb_progress_new(const fb_config *cfg, const char *what, const char *unit, int json);

/* The totals, when known (0: unknown). */
void fb_progress_total(fb_progress *p, int64_t rows, int64_t bytes, int64_t items);

/* Absolute counters so far; items_total 0 keeps the total given before. Redraws when due. */
void fb_progress_update(fb_progress *p, int64_t rows, int64_t bytes, int64_t items, int64_t items_total);

/* Makes p the target of fb_progress_data (NULL: none). */
void fb_progress_attach(fb_progress *p);

/* len bytes of COPY text were produced: adds them, and their newlines as rows (a COPY text row ends in the only
 * unescaped newline it has). Redraws when due. Nothing when no handle is attached. */
void fb_progress_data(const void *buf, size_t len);

/* One more item done (a table), for the attached handle. */
void fb_progress_item(void);

/* The final line (ok: "done", else "stopped"); later calls draw nothing. Detaches p if it was attached. */
void fb_progress_done(fb_progress *p, int ok);

void fb_progress_free(fb_progress *p);

#endif
