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

#endif
