/* test_stor_posix: the posix storage driver keeps every path inside its root and never shows a half-written file
 * as complete (stor.h). An attacker who controls a configuration's storage_path or a job id tries "..", absolute
 * paths and symbolic links planted below the root; a worker killed mid-write leaves its temporary behind. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/stor.h"
#include "tap.h"

/* base/root is the storage root; base/outside is what an attacker wants to reach; base/x.fbak is where "../x.fbak"
 * would land. */
static char base[64] = "/tmp/fb_stor_posix_XXXXXX";
static char root[96], outside[96];

/* Every way of naming something outside the root (or nothing) is FB_ERR_INVALID, for each operation. */
static void refuses_paths_leaving_the_root(stor *st) {
    static const char *const bad[] = {"..", "../x.fbak", "a/../../x.fbak", "a/..", "/etc/passwd", "/", "",
                                      "a//b.fbak", "a/", "./a.fbak", "a/./b.fbak", "."};
    char longp[1100];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    for (size_t i = 0; i <= sizeof bad / sizeof bad[0]; i++) {
        const char *p = i < sizeof bad / sizeof bad[0] ? bad[i] : longp;
        fb_err err;
        stor_wfile *w = NULL;
        stor_rfile *r = NULL;
        CHECKF(stor_path_check(p, &err) == FB_ERR_INVALID, "path check accepted \"%.40s\"", p);
        CHECKF(stor_create(st, p, &w, &err) == FB_ERR_INVALID && !w, "create accepted \"%.40s\"", p);
        CHECKF(stor_open(st, p, &r, &err) == FB_ERR_INVALID && !r, "open accepted \"%.40s\"", p);
        CHECKF(stor_remove(st, p, &err) == FB_ERR_INVALID, "remove accepted \"%.40s\"", p);
        CHECKF(stor_list(st, p, NULL, NULL, &err) == FB_ERR_INVALID, "list accepted \"%.40s\"", p);
    }
    fb_err err;
    /* rename takes names, not paths: a '/' or ".." in either would move a file to another folder. */
    CHECK_EQ_INT(stor_rename(st, "d", "x.fbak", "../x.fbak", &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_rename(st, "d", "x.fbak", "e/x.fbak", &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_rename(st, "d", "../x.fbak", "x.fbak", &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_rename(st, "..", "x.fbak", "y.fbak", &err), FB_ERR_INVALID);
    /* Nothing above was made beside the root. */
    char p[128];
    snprintf(p, sizeof p, "%s/x.fbak", base);
    CHECK(access(p, F_OK) != 0);
}

static int write_file(stor *st, const char *rel, const char *text, fb_err *err) {
    stor_wfile *w = NULL;
    fb_code rc = stor_create(st, rel, &w, err);
    if (!rc) rc = stor_wfile_write(w, text, strlen(text), err);
    if (!rc) return stor_wfile_commit(w, err);
    stor_wfile_abort(w);
    return rc;
}

/* A symbolic link below the root, to a folder or a file outside it, is refused, never followed: for a folder
 * in the middle of a path, at the end of a listed folder, and for the file itself. */
static void refuses_symlinks_leading_out(stor *st) {
    char p[256], target[256];
    fb_err err;
    snprintf(target, sizeof target, "%s/secret.fbak", outside);
    FILE *f = fopen(target, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("outside", f);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/out", root);
    CHECK(symlink(outside, p) == 0);
    CHECK_EQ_INT(mkdir(strcat(strcpy(p, root), "/d"), 0750), 0);
    snprintf(p, sizeof p, "%s/d/link.fbak", root);
    CHECK(symlink(target, p) == 0);
    snprintf(p, sizeof p, "%s/d/deeper", root);
    CHECK(symlink(outside, p) == 0);

    stor_wfile *w = NULL;
    stor_rfile *r = NULL;
    CHECK_EQ_INT(stor_create(st, "out/new.fbak", &w, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_create(st, "d/deeper/x/new.fbak", &w, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_open(st, "out/secret.fbak", &r, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_open(st, "d/link.fbak", &r, &err), FB_ERR_INVALID);
    CHECK(!r && !w);
    CHECK_EQ_INT(stor_list(st, "out", NULL, NULL, &err), FB_ERR_INVALID);
    /* Overwriting the link's name must not write through it into the target. */
    fb_code rc = write_file(st, "d/link.fbak", "replaced", &err);
    char got[32] = "";
    f = fopen(target, "r");
    if (f) {
        CHECK(fgets(got, sizeof got, f) != NULL);
        fclose(f);
    }
    CHECKF(strcmp(got, "outside") == 0, "the file outside the root now holds \"%s\" (write rc %d)", got, (int)rc);
    /* Removing through the link folder removes nothing outside. */
    CHECK_EQ_INT(stor_remove(st, "out/secret.fbak", &err), FB_ERR_INVALID);
    CHECK(access(target, F_OK) == 0);
    /* No file was made in the folder outside. */
    snprintf(p, sizeof p, "%s/new.fbak", outside);
    CHECK(access(p, F_OK) != 0);
}

typedef struct names {
    char list[16][64];
    int n;
} names;
static fb_code collect(void *opaque, const stor_entry *e, fb_err *err) {
    names *nm = opaque;
    if (nm->n < 16) snprintf(nm->list[nm->n++], sizeof nm->list[0], "%s", e->name);
    return FB_OK;
}
static int listed(const names *nm, const char *name) {
    for (int i = 0; i < nm->n; i++)
        if (strcmp(nm->list[i], name) == 0) return 1;
    return 0;
}

/* A writer that dies between create and commit (here: a child process that _exit()s) leaves only ".NAME.tmp":
 * the final name does not exist, a listing shows no entry of that name, and the next create of the same path
 * takes the leftover over (the dead writer's lock died with it) and commits only its own bytes. */
static void crash_leftovers_are_not_complete(stor *st) {
    fb_err err;
    pid_t pid = fork();
    if (pid == 0) {
        stor_wfile *w = NULL;
        if (stor_create(st, "c/job.fbak", &w, &err) || stor_wfile_write(w, "half-written garbage", 20, &err)) _exit(2);
        _exit(0); /* no commit, no abort: a crash */
    }
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char p[256];
    snprintf(p, sizeof p, "%s/c/.job.fbak.tmp", root);
    CHECKF(access(p, F_OK) == 0, "the crashed writer left no temporary at %s", p);

    stor_rfile *r = NULL;
    CHECK_EQ_INT(stor_open(st, "c/job.fbak", &r, &err), FB_ERR_NOTFOUND);
    names nm = {0};
    CHECK_EQ_INT(stor_list(st, "c", collect, &nm, &err), FB_OK);
    CHECKF(!listed(&nm, "job.fbak"), "a half-written file is listed as complete");

    CHECK_EQ_INT(write_file(st, "c/job.fbak", "complete", &err), FB_OK);
    CHECK_EQ_INT(stor_open(st, "c/job.fbak", &r, &err), FB_OK);
    if (r) {
        char buf[16] = "";
        CHECK_EQ_INT(r->size, 8);
        CHECK_EQ_INT(stor_rfile_pread(r, buf, 8, 0, &err), FB_OK);
        CHECK(memcmp(buf, "complete", 8) == 0);
        stor_rfile_close(r);
    }
    CHECKF(access(p, F_OK) != 0, "the temporary is still there after a commit");

    /* An abort leaves nothing, neither the temporary nor the final name. */
    stor_wfile *w = NULL;
    CHECK_EQ_INT(stor_create(st, "c/aborted.fbak", &w, &err), FB_OK);
    CHECK_EQ_INT(stor_wfile_write(w, "x", 1, &err), FB_OK);
    stor_wfile_abort(w);
    snprintf(p, sizeof p, "%s/c/.aborted.fbak.tmp", root);
    CHECK(access(p, F_OK) != 0);
    CHECK_EQ_INT(stor_open(st, "c/aborted.fbak", &r, &err), FB_ERR_NOTFOUND);

    /* While a writer holds the temporary, a second writer of the same path is told to retry, not let in. */
    stor_wfile *w1 = NULL, *w2 = NULL;
    CHECK_EQ_INT(stor_create(st, "c/busy.fbak", &w1, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, "c/busy.fbak", &w2, &err), FB_ERR_TRANSIENT);
    CHECK(!w2);
    stor_wfile_abort(w1);
}

int main(void) {
    if (!mkdtemp(base)) return tap_check(0, "mkdtemp", __FILE__, __LINE__, strerror(errno)), tap_done();
    snprintf(root, sizeof root, "%s/root", base);
    snprintf(outside, sizeof outside, "%s/outside", base);
    CHECK(mkdir(root, 0750) == 0 && mkdir(outside, 0750) == 0);
    stor *st = NULL;
    fb_err err;
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    if (!st) return tap_done();
    refuses_paths_leaving_the_root(st);
    refuses_symlinks_leading_out(st);
    crash_leftovers_are_not_complete(st);
    stor_free(st);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    CHECK(system(cmd) == 0);
    return tap_done();
}
