/* dump_open: see dump_open.h. */
#include "dump/dump_open.h"

#include "artifact/arc_key.h"

fb_code dump_open_artifact(const char *path, const char *secret_key_file, stor_rfile **f, arc_reader **r, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    *f = NULL;
    *r = NULL;
    fb_code rc = stor_posix_open_path(path, f, err);
    if (rc == FB_OK) rc = arc_key_load_secret(secret_key_file, sk, pk, err);
    if (rc == FB_OK) rc = arc_reader_open(*f, sk, pk, r, err);
    sodium_memzero(sk, sizeof sk);
    if (rc) {
        stor_rfile_close(*f);
        *f = NULL;
    }
    return rc;
}
