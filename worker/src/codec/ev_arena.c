/* ev_arena: see ev_arena.h. Blocks of 4 KiB (or larger for big requests) chained in a list. */
#include "codec/ev_arena.h"

#include <stdlib.h>
#include <string.h>

typedef struct ev_block {
    struct ev_block *next;
    size_t used, cap;
    max_align_t data[];
} ev_block;

struct ev_arena {
    ev_block *head;
};

ev_arena *ev_arena_new(void) { return calloc(1, sizeof(ev_arena)); }

void *ev_arena_alloc(ev_arena *a, size_t size) {
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (size == 0) size = sizeof(max_align_t);
    ev_block *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        b = malloc(sizeof(ev_block) + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *ev_arena_strndup(ev_arena *a, const char *s, size_t len) {
    char *p = ev_arena_alloc(a, len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void ev_arena_free(ev_arena *a) {
    if (!a) return;
    ev_block *b = a->head;
    while (b) {
        ev_block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}
