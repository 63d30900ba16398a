/* ev_arena: a bump allocator that owns every string and array of one decoded event, so ev_event_free() is one
 * call however many fields an event has. Private to codec/. */
#ifndef EV_ARENA_H
#define EV_ARENA_H

#include <stddef.h>

typedef struct ev_arena ev_arena;

ev_arena *ev_arena_new(void);
/* Zeroed memory that lives until ev_arena_free(); NULL on out of memory. */
void *ev_arena_alloc(ev_arena *a, size_t size);
/* A NUL-terminated copy of len bytes. */
char *ev_arena_strndup(ev_arena *a, const char *s, size_t len);
void ev_arena_free(ev_arena *a);

#endif
