/* vectors: reading the golden vector files of schemas/vectors/ in C tests. */
#ifndef VECTORS_H
#define VECTORS_H

#include <stddef.h>

typedef struct vec_file {
    char name[256];
    unsigned char *data;
    size_t len;
} vec_file;

/* Loads every *.msgpack of schemas/vectors/<kind>/ ("valid" or "invalid"), sorted by name. Returns the count,
 * or -1; *out is a malloc'd array freed with vec_free. */
int vec_load(const char *kind, vec_file **out);
void vec_free(vec_file *v, int n);
/* Reads a whole file into a NUL-terminated malloc'd buffer, or NULL. */
char *vec_read_text(const char *path);
/* In one entry of an INDEX.json (text from entry up to its closing '}'), the value of "field": a JSON string
 * (backslash escapes taken literally) or a bare word (true, false, a number, null), copied into buf (cut at cap).
 * *quoted (may be NULL) says whether it was a string: a key "null" is not the null key. Returns 0, or -1 when the
 * entry has no such field. A reader for the vectors' own flat, generated files, not a JSON parser. */
int vec_entry_field(const char *entry, const char *field, char *buf, size_t cap, int *quoted);

#endif
