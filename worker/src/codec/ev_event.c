/* ev_event: life cycle of events and UUID validation. Decoding is in ev_decode.c, encoding
 * in ev_encode.c, both driven by schemas/SPEC.md. */
#include "codec/ev_event.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "codec/ev_arena.h"

ev_event *ev_event_new(ev_type type) {
    ev_arena *a = ev_arena_new();
    if (!a) return NULL;
    ev_event *ev = ev_arena_alloc(a, sizeof *ev);
    if (!ev) {
        ev_arena_free(a);
        return NULL;
    }
    ev->v = EV_VERSION;
    ev->type = type;
    ev->attempt = 1;
    ev->arena_ = a;
    return ev;
}

void ev_event_free(ev_event *ev) {
    if (ev) ev_arena_free(ev->arena_); /* the event itself lives in its arena */
}

const char *ev_strdup(ev_event *ev, const char *s) {
    return s ? ev_arena_strndup(ev->arena_, s, strlen(s)) : NULL;
}

void *ev_alloc(ev_event *ev, size_t size) { return ev_arena_alloc(ev->arena_, size); }

int ev_uuid_valid(const char *s) {
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}
