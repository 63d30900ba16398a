/* vectors: see vectors.h. FB_SOURCE_DIR (set by ctest) locates the repository. */
#include "vectors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int vec_cmp(const void *a, const void *b) { return strcmp(((const vec_file *)a)->name, ((const vec_file *)b)->name); }

static unsigned char *vec_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

char *vec_read_text(const char *path) {
    size_t n;
    return (char *)vec_read(path, &n);
}

int vec_load(const char *kind, vec_file **out) {
    const char *src = getenv("FB_SOURCE_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/schemas/vectors/%s", src ? src : ".", kind);
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 256;
    vec_file *v = calloc((size_t)cap, sizeof *v);
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        size_t l = strlen(e->d_name);
        if (l < 9 || strcmp(e->d_name + l - 8, ".msgpack") != 0) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(v[n].name, sizeof v[n].name, "%.*s", (int)(l - 8), e->d_name);
        v[n].data = vec_read(path, &v[n].len);
        if (v[n].data) n++;
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, vec_cmp);
    *out = v;
    return n;
}

void vec_free(vec_file *v, int n) {
    for (int i = 0; i < n; i++) free(v[i].data);
    free(v);
}

int vec_entry_field(const char *entry, const char *field, char *buf, size_t cap, int *quoted) {
    char key[128];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *end = strchr(entry, '}');
    const char *f = strstr(entry, key);
    if (!f || (end && f > end)) return -1;
    f += strlen(key);
    size_t n = 0;
    int q = *f == '"';
    if (quoted) *quoted = q;
    if (q) {
        f++;
        while (*f && *f != '"' && n + 1 < cap) {
            if (*f == '\\' && f[1]) f++;
            buf[n++] = *f++;
        }
    } else {
        while (*f && *f != ',' && *f != '\n' && *f != '}' && n + 1 < cap) buf[n++] = *f++;
    }
    buf[n] = 0;
    return 0;
}
