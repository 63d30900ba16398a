/* dmn_capture: change capture inside the worker daemon — exactly one active capture per database, with automatic
 * failover (issue 16).
 *
 * Every worker given `capture-databases` runs one thread per database. Each thread keeps an ordinary connection
 * to its database and tries the session advisory lock (DC_LOCK_CLASS, hashtext(slot)) every capture-lock-retry-s;
 * the holder is the leader and runs the capture loop (cap_capture) on that thread, the others stand by. All of
 * them poll the slot's state on their connection for the metrics (lag bytes and seconds, safe_wal_size, state).
 *
 * Why a PostgreSQL advisory lock and not Kafka partition assignment:
 * - The lock lives where the resource does. A session lock dies with its session: a SIGKILLed worker's
 *   connection is closed by its kernel and the server frees the lock at once; a partitioned or frozen one stops
 *   pinging, and the lock connection is opened with idle_session_timeout (DC_IDLE_TIMEOUT_S), so the server ends
 *   that session, and with it the lock, within seconds. Kafka assignment answers a different question: a
 *   rebalance can hand the partition to a new worker while the old one's walsender is still streaming (the
 *   group's session timeout is not a fence on PostgreSQL), and a worker that leaves the group for a long job
 *   would stop capturing for reasons unrelated to capture.
 * - The slot itself is a second guard: it has at most one active walsender, so a second leader's
 *   START_REPLICATION fails ("replication slot is active") until the first one's walsender is gone; that error
 *   is retried as transient.
 * - A deposed leader must not write: the leader pings its lock connection every DC_PING_MS and cap_capture asks
 *   the fence (last successful ping younger than DC_LEASE_MS) before every segment write. The lease is shorter
 *   than the server's idle timeout, so an old leader stops writing long before anyone else can take the lock;
 *   only a single segment write lasting longer than DC_IDLE_TIMEOUT_S - DC_LEASE_MS could still land after a new
 *   leader started, and the new leader reads the chain's end after taking the slot (cap_capture_begin), so even
 *   then a chain that overlapped would be refused by every reader, never silently merged.
 * Takeover resumes from the chain's end in storage, like a restart: nothing lost, nothing doubled (cap_capture.h).
 *
 * A condition that needs a new base (slot dropped or invalidated, chain ended by a schema change) stops the
 * leader's capture: logged as an error naming the slot, metric fusion_backup_capture_stopped, and checked again
 * every DC_STOPPED_RECHECK_S. The leader keeps the lock meanwhile, so the other workers do not each rediscover it.
 * Nothing here creates or drops a slot: the next backup of the configuration takes the new base under the next
 * slot generation (job/job_rebase.h).
 *
 * Following the generations (capture/cap_rebase.h): the thread streams the newest generation of capture-slot whose
 * slot exists on the database and whose base FULL has committed (a usable FULL in capture-storage-path whose index
 * names that generation's stream), checked every capture-lock-retry-s while streaming and while stopped (while a
 * newer slot's base FULL runs, the folder's indexes are read at intervals doubling up to 30 s). Not
 * before the FULL committed: a base that fails drops its slot, and a walsender streaming it would make that drop
 * wait forever. Never back to an older generation. The lock stays the family's (hashtext(capture-slot)), so a
 * new generation changes no leader. Metrics are labelled with the slot streamed.
 *
 * The chain: storage-root / capture-storage-path / capture / DB / SLOT, stream id DB/SLOT, signed with the
 * worker's key, which must be among trusted-signer (to verify its own chain when resuming). capture-storage-path
 * must be the configuration's storage_path: restore finds a chain beside its base, and the thread finds a new
 * generation's base there (the index key: index-key or public-key, as for backups).
 */
#ifndef DMN_CAPTURE_H
#define DMN_CAPTURE_H

#include <signal.h>

#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"
#include "common/fb_sign.h"

typedef struct dmn_capture dmn_capture;

/* Starts a thread per database of cfg->capture_databases; *out is NULL when there are none. The threads stop when
 * *signals becomes non-zero (a leader writes what is pending first). cfg, signer and signals are borrowed until
 * dmn_capture_stop. FB_ERR_USAGE when a setting capture needs is missing. */
fb_code dmn_capture_start(const fb_config *cfg, const char *worker_name, const fb_signer *signer,
                          fb_flag *signals, dmn_capture **out, fb_err *err);
/* Waits for the threads (call after *signals is set) and frees everything; NULL ok. */
void dmn_capture_stop(dmn_capture *c);

#endif
