/* cap_txn: one committed transaction as change capture sees it, and the relation definitions it refers to.
 *
 * Both the pgoutput decoder (cap_pgoutput.h) and the segment reader (cap_segment.h) produce these, so a restore
 * applies what the reader returns exactly as the capture saw it. Values are PostgreSQL's text output form (what
 * pgoutput sends without the `binary` option), which COPY and `$1::type` parameters accept back.
 *
 * Relations: pgoutput sends a Relation message before a relation's first change in a session and again after its
 * definition changed (DDL). Each message makes a new cap_rel kept by a cap_relset until the set is freed, so a
 * change always points at the definition that was current when it was decoded, even across an ALTER TABLE.
 * Ownership: a cap_txn owns its changes and values; its cap_rel pointers are borrowed from the relset of whoever
 * made it (decoder or reader), which must outlive it.
 */
#ifndef CAP_TXN_H
#define CAP_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

/* LSNs print as PostgreSQL does: "16/B374D848". */
#define CAP_LSN_FMT "%X/%X"
#define CAP_LSN_ARGS(l) (unsigned)((uint64_t)(l) >> 32), (unsigned)((uint64_t)(l) & 0xffffffffu)
/* Parses "X/Y" (hex, as pg_lsn); returns 0, or -1 when it is not one. */
int cap_lsn_parse(const char *s, uint64_t *out);

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01): pgoutput times are PostgreSQL epoch. */
#define CAP_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* PostgreSQL allows at most 1664 columns in a row (MaxTupleAttributeNumber). */
#define CAP_MAX_COLS 1664

#define CAP_COL_KEY 1u  /* pgoutput column flag: part of the replica identity */

typedef struct cap_col {
    char *name;
    uint32_t type_oid;
    int32_t typmod;
    uint8_t flags;
} cap_col;

typedef struct cap_rel {
    uint32_t relid;
    char *nspname, *relname;  /* "pg_catalog" when pgoutput sent the empty namespace */
    char replident;           /* 'd' default (primary key), 'n' nothing, 'f' full, 'i' index */
    uint16_t ncols;
    cap_col *cols;
    struct cap_rel *next;     /* older definitions and other relations (the relset's list) */
} cap_rel;

/* Every definition seen, newest first; cap_relset_current() finds a relid's newest. */
typedef struct cap_relset {
    cap_rel *head;
} cap_relset;

/* One column value: 'n' NULL, 'u' unchanged TOASTed value (not sent: keep the stored one), 't' text. */
typedef struct cap_val {
    char kind;
    uint32_t len;
    char *data;  /* 't' only: len bytes plus a NUL (text output never holds a NUL) */
} cap_val;

typedef struct cap_tuple {
    uint16_t ncols;
    cap_val *vals;
} cap_tuple;

typedef enum cap_kind { CAP_INSERT = 'I', CAP_UPDATE = 'U', CAP_DELETE = 'D', CAP_TRUNCATE = 'T' } cap_kind;

#define CAP_TRUNC_CASCADE 1u
#define CAP_TRUNC_RESTART_IDENTITY 2u

typedef struct cap_change {
    cap_kind kind;
    const cap_rel *rel;  /* I, U, D */
    /* U, D: 0 (update without key change), 'K' key columns only, 'O' the whole old row (REPLICA IDENTITY FULL) */
    char old_kind;
    cap_tuple old_tup, new_tup;  /* new: I, U; old: U with old_kind, D */
    uint8_t trunc_options;       /* T */
    uint32_t ntrunc;
    const cap_rel **trunc_rels;  /* T: ntrunc relations, emptied together */
} cap_change;

typedef struct cap_txn {
    uint32_t xid;
    uint64_t commit_lsn;   /* the commit record's start (pgoutput Begin final_lsn = Commit commit_lsn) */
    uint64_t end_lsn;      /* the commit record's end: confirming it tells the slot this transaction is kept */
    int64_t commit_time_us;/* Unix epoch microseconds */
    size_t nchanges, cap;
    cap_change *changes;
    size_t bytes;          /* approximate memory held (values and arrays), for flush thresholds */
} cap_txn;

/* A new empty transaction, or NULL when out of memory. Free with cap_txn_free (NULL ok). */
cap_txn *cap_txn_new(void);
void cap_txn_free(cap_txn *t);
/* Appends a zeroed change of kind and returns it (owned by t), or NULL when out of memory. */
cap_change *cap_txn_add(cap_txn *t, cap_kind kind);
/* Allocates a tuple's value array (ncols zeroed values); -1 when out of memory. */
int cap_tuple_alloc(cap_tuple *tp, uint16_t ncols);

/* The tuple framing pgoutput uses (TupleData) and change segments reuse: u16 column count, then per column 'n',
 * 'u', or 't' with a u32 length and the bytes. 'b' (binary, never requested) and anything else are refused.
 * cap_tuple_read fills tp (caller frees through the txn) and adds what it holds to *bytes; FB_ERR_FORMAT or
 * FB_ERR_NOMEM with a message naming the problem. */
struct cap_rd;
struct fb_sbuf;
fb_code cap_tuple_read(struct cap_rd *r, cap_tuple *tp, size_t *bytes, fb_err *err);
void cap_tuple_write(struct fb_sbuf *b, const cap_tuple *tp);

/* Adds a definition (takes ownership of rel, which must come from malloc with malloc'd fields). */
void cap_relset_add(cap_relset *s, cap_rel *rel);
/* The newest definition of relid, or NULL. */
const cap_rel *cap_relset_current(const cap_relset *s, uint32_t relid);
void cap_relset_clear(cap_relset *s);
void cap_rel_free(cap_rel *r);

#endif
