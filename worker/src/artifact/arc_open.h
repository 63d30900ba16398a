/* arc_open: opens an artifact named by a local path with the secret key from a key file (the CLI commands'
 * shared first step). The key is erased from memory once the data key is unsealed.
 *
 * An INCREMENTAL or DIFFERENTIAL artifact references tables stored in earlier artifacts ("<job>.fbak"); the
 * reader finds them in the artifact's own folder first, then in each chain folder given, in order. A missing link
 * is an FB_ERR_NOTFOUND naming the job and every folder searched; a tampered one fails its own authentication or
 * the hash the referencing manifest recorded (arc_reader.h).
 */
#ifndef ARC_OPEN_H
#define ARC_OPEN_H

#include <stdio.h>

#include "artifact/arc_reader.h"
#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

/* On success *f and *r are new; free with arc_reader_free(*r) then stor_rfile_close(*f). trust: arc_reader_open's
 * (its keyring must outlive *r); when trust->job_id is NULL, the job id of the name "JOB.fbak" is required. */
fb_code arc_open_artifact(const char *path, const char *secret_key_file, const arc_trust *trust, stor_rfile **f,
                           arc_reader **r, fb_err *err);
/* The same with further folders for the chain (n_dirs may be 0). The strings are copied. */
fb_code arc_open_chain(const char *path, const char *secret_key_file, const char *const *chain_dirs, size_t n_dirs,
                        const arc_trust *trust, stor_rfile **f, arc_reader **r, fb_err *err);

/* The trust of a command (arc_sign.h) from its settings: the `trusted-signer` keys loaded into kr (the caller's;
 * fb_keyring_free it after the readers) and `allow-unsigned`. */
fb_code arc_open_trust(const fb_config *cfg, fb_keyring *kr, arc_trust *t, fb_err *err);
/* One line saying which backup r is: job id, type, configuration, database, snapshot time, signer. */
void arc_open_describe(const arc_reader *r, FILE *out);

#endif
