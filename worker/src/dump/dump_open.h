/* dump_open: opens an artifact named by a local path with the secret key from a key file (the CLI commands'
 * shared first step). The key is erased from memory once the data key is unsealed. */
#ifndef DUMP_OPEN_H
#define DUMP_OPEN_H

#include "artifact/arc_reader.h"
#include "common/fb_err.h"
#include "storage/stor.h"

/* On success *f and *r are new; free with arc_reader_free(*r) then stor_rfile_close(*f). */
fb_code dump_open_artifact(const char *path, const char *secret_key_file, stor_rfile **f, arc_reader **r, fb_err *err);

#endif
