/* cap_schema: the column sets of the relations a chain has captured, kept beside the chain, so a schema change
 * (a Django migration) is detected however many restarts and failovers lie between the base and the change.
 *
 * Why a changed column set ends the chain (instead of applying the new shape):
 * - DDL is not in the logical stream. pgoutput only sends a new Relation message before the first change of a
 *   table under its new definition. What the DDL did to existing rows is nowhere in the stream: ADD COLUMN ...
 *   DEFAULT x (what a Django migration adding a field with a default runs) fills every existing row with x
 *   without a single row change being decoded; a type change rewrites values; a DROP loses them. Applying "the
 *   new shape" to a restore target (ALTER TABLE ADD COLUMN from the Relation's type oid) would give those rows
 *   NULL instead of x: a restore that differs from the source with no error anywhere. Nor do Relation messages
 *   carry defaults, NOT NULL, constraints or indexes.
 * - So the chain's promise (restore = the source at that moment) holds only up to the last transaction before the
 *   first change under a new definition. The capture writes everything before it, records the end here, and
 *   stops; restoring past it needs a new base (a FULL in a new slot's snapshot carries the new schema).
 * - Detecting it needs the old definition. A worker cannot read segments (it holds no secret key), and after a
 *   restart or failover the decoder starts empty, so the definitions live here: per relation oid (stable across
 *   ALTER TABLE) a hash of schema, table name and each column's name, type oid and typmod. Key flags (replica
 *   identity) are left out: the stream carries them with every change and applying does not depend on the target's.
 * - Limits: a table whose first captured change comes after a migration is recorded with its new definition (the
 *   base's catalog is not read here; the FULL taken in the slot's snapshot has it). A table created after the
 *   base is a new oid, not a change; applying its rows fails loudly on the missing table, never silently.
 *
 * File "schema.fbcaps" in the chain's folder, text, written through stor (temp + fsync + rename) before the
 * segment that first uses a new definition:
 *   fusion-backup capture schema 1
 *   stream DB/SLOT
 *   rel OID HASH32           one line per relation, ascending oid
 *   end LSN OID TEXT         only when the chain ended: commit LSN of the first transaction not in it, why
 *   key KEYID                signing key id
 *   sig HEX128               Ed25519 (fb_sign, context "capture-schema") of BLAKE2b-256 of every byte before "key"
 * A file not signed by a trusted key, or of another stream, is refused (a forged one could hide a migration).
 *
 * Ownership: cap_schema_load returns a set the caller frees with cap_schema_free (NULL ok).
 */
#ifndef CAP_SCHEMA_H
#define CAP_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "capture/cap_txn.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

#define CAP_SCHEMA_FILE "schema.fbcaps"
#define CAP_SCHEMA_SIGN_CONTEXT "capture-schema"

typedef struct cap_schema cap_schema;

/* Loads dir/schema.fbcaps (an empty set when there is none). FB_ERR_UNTRUSTED / FB_ERR_FORMAT when it is not
 * authentic or not this stream's. */
fb_code cap_schema_load(stor *st, const char *dir, const char *stream, const fb_keyring *signers, cap_schema **out,
                        fb_err *err);
void cap_schema_free(cap_schema *s);

/* Checks a definition the stream sent, at commit LSN `at` of the transaction using it: FB_OK when it is the known
 * one or the relation is new (then recorded: cap_schema_dirty), FB_ERR_CONFLICT naming the table and what
 * changed when its column set differs from the chain's. */
fb_code cap_schema_check(cap_schema *s, const cap_rel *rel, uint64_t at, fb_err *err);

/* Records that the chain ends before commit LSN at because of relid (why: one line). */
fb_code cap_schema_end(cap_schema *s, uint64_t at, uint32_t relid, const char *why, fb_err *err);
/* 1 when the chain has ended; *at and *why (borrowed) say where and why. */
int cap_schema_ended(const cap_schema *s, uint64_t *at, const char **why);

/* 1 when the set came from a file (0: the chain had none yet). A chain with segments always has one: the file is
 * written before the first segment, so its absence means it was removed. */
int cap_schema_from_file(const cap_schema *s);

/* 1 when something was recorded since the last save. */
int cap_schema_dirty(const cap_schema *s);
/* Writes the set durably (signed by signer); clears dirty. */
fb_code cap_schema_save(cap_schema *s, stor *st, const char *dir, const fb_signer *signer, fb_err *err);

#endif
