/* arc_chain: what a storage folder holds, as backups and the links between them (for INCREMENTAL/DIFFERENTIAL
 * bases and retention).
 *
 * A folder ("<storage root>/<storage_path>") holds "<job>.fbak" artifacts; each of format 2 carries a plaintext
 * chain index (arc_index.h) that arc_chain_load reads without any key and authenticates with the index key. An
 * entry says what is there and, when something is wrong (index altered, artifact damaged), why it cannot be used.
 * Temporaries (".name.tmp") and trash (".name.trash") are not entries. Everything is owned by the arc_chain.
 */
#ifndef ARC_CHAIN_H
#define ARC_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_index.h"
#include "artifact/arc_sign.h"
#include "common/fb_err.h"
#include "storage/stor.h"

typedef struct arc_chain_entry {
    char *job_id;             /* from the file name "<job>.fbak" */
    uint64_t artifact_size;
    int64_t artifact_mtime_ms;
    int artifact_version;     /* format version from the artifact's header (0: unreadable) */
    arc_index *ix;            /* authenticated chain index; NULL for format 1, or when unusable (see problem) */
    uint64_t records_off;     /* index version 3 (format 5): file offset of its chunk records (arc_clist.h) */
    char problem[512];        /* "" when the entry is a complete, consistent backup (or a format-1 FULL) */
    /* Who wrote it (arc_sign.h): TRUSTED (signed by a key of the keyring, for this file name), UNSIGNED (format
     * <= 4) or UNTRUSTED (unknown key, bad signature, another job's file; untrusted_why says which). Only a
     * TRUSTED entry is usable as a base; retention still reads the references of the others (keeping more is
     * safe), so a store written before format 5 keeps being pruned correctly. */
    arc_sig_status sig;
    char untrusted_why[512];
} arc_chain_entry;

typedef struct arc_chain {
    arc_chain_entry *e;
    size_t n;
} arc_chain;

/* Lists rel_dir on st (a missing folder is an empty chain). key: the index key. signers: the trusted artifact
 * signers (borrowed during the call; NULL or empty: every format-5 entry is UNTRUSTED). */
fb_code arc_chain_load(stor *st, const char *rel_dir, const unsigned char key[ARC_INDEX_KEY_BYTES],
                       const fb_keyring *signers, arc_chain *out, fb_err *err);
void arc_chain_clear(arc_chain *c);
arc_chain_entry *arc_chain_find(const arc_chain *c, const char *job_id);
/* A complete format-2 backup whose index authenticated and names the same job as the file, signed by a trusted
 * key (format 5). */
int arc_chain_usable(const arc_chain_entry *e);
/* The time of an entry: the index's completed_ms, else the artifact's mtime. */
int64_t arc_chain_time(const arc_chain_entry *e);
/* "FULL", "INCREMENTAL", "DIFFERENTIAL" from the index; a format-1 artifact is a "FULL"; otherwise NULL. */
const char *arc_chain_type(const arc_chain_entry *e);

#endif
