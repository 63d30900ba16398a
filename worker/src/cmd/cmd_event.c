/* cmd_event: `fusion-backup event decode|reencode FILE|-`: the C codec from the command line.
 *
 * decode prints the event as one JSON line (exit 3 with the reason when it breaks the contract); reencode decodes
 * and encodes again, writing msgpack to stdout. Interop tests drive the C codec through these, and an operator can
 * read a message taken from a topic or the DLQ. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "codec/ev_event.h"
#include "codec/ev_json.h"

/* Reads a whole file (or stdin for "-") up to limit bytes into a new malloc'd buffer. */
static fb_code cmd_event_slurp(const char *path, unsigned char **out, size_t *len, fb_err *err) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return fb_err_set(err, FB_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    unsigned char *buf = malloc(cap);
    fb_code rc = FB_OK;
    while (buf) {
        if (n == cap) {
            if (cap > EV_MESSAGE_MAX) {
                rc = fb_err_set(err, FB_ERR_INVALID, "\"%s\" is larger than the 4 MiB message limit", path);
                break;
            }
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!buf) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory reading \"%s\"", path);
    if (f != stdin) fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return FB_OK;
}

int cmd_event(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "decode") != 0 && strcmp(argv[1], "reencode") != 0)) {
        fprintf(stderr, "usage: fusion-backup event decode|reencode FILE|-\n"
                        "  decode    print the event as JSON (exit 3 and the reason if it breaks the contract)\n"
                        "  reencode  decode, then write the C encoder's msgpack to stdout\n");
        return FB_ERR_USAGE;
    }
    fb_err err;
    unsigned char *buf = NULL, *enc = NULL;
    size_t len = 0, enc_len = 0;
    ev_event *ev = NULL;
    fb_code rc = cmd_event_slurp(argv[2], &buf, &len, &err);
    if (!rc) rc = ev_decode(buf, len, &ev, &err);
    if (!rc && strcmp(argv[1], "decode") == 0) {
        ev_json_write(stdout, ev);
        fputc('\n', stdout);
    } else if (!rc) {
        rc = ev_encode(ev, &enc, &enc_len, &err);
        if (!rc && fwrite(enc, 1, enc_len, stdout) != enc_len) rc = fb_err_set(&err, FB_ERR_IO, "could not write stdout");
    }
    if (rc) fprintf(stderr, "fusion-backup event: %s\n", err.msg);
    free(buf);
    free(enc);
    ev_event_free(ev);
    return rc;
}
