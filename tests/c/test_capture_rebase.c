/* test_capture_rebase: the slot generation names (cap_rebase.h) that a new capture base takes by itself.
 *
 * Proves: generation 1 is capture-slot itself and N >= 2 is "S_N"; a name is parsed back to its generation only
 * when it is exactly one the family would make (no leading zero, no 0 or 1 suffix, nothing after, not another
 * family sharing a prefix, not above CAP_REBASE_GEN_MAX), so a name read from the server or an index cannot make
 * the worker create, stream or drop a slot outside the family; a generation whose name would pass PostgreSQL's 63
 * bytes is refused with a message saying to shorten capture-slot; a capture-slot that is not a slot name is
 * refused; the reason names are the ones the status counters document.
 */
#include <stdio.h>
#include <string.h>

#include "capture/cap_rebase.h"
#include "tap.h"

static void names(void) {
    char out[CAP_NAME_MAX + 1];
    fb_err err = {0};
    CHECK(cap_rebase_slot_name("fusion_backup", 1, out, &err) == FB_OK);
    CHECK_EQ_STR(out, "fusion_backup");
    CHECK(cap_rebase_slot_name("fusion_backup", 2, out, &err) == FB_OK);
    CHECK_EQ_STR(out, "fusion_backup_2");
    CHECK(cap_rebase_slot_name("fusion_backup", CAP_REBASE_GEN_MAX, out, &err) == FB_OK);
    CHECK_EQ_STR(out, "fusion_backup_9999");
    CHECK(cap_rebase_slot_name("fusion_backup", 0, out, &err) == FB_ERR_USAGE);
    CHECK(cap_rebase_slot_name("fusion_backup", CAP_REBASE_GEN_MAX + 1, out, &err) == FB_ERR_USAGE);
    char base[CAP_NAME_MAX + 1];
    memset(base, 'a', 61);
    base[61] = '\0';
    CHECK(cap_rebase_slot_name(base, 9, out, &err) == FB_OK); /* 61 + "_9" = 63 */
    CHECK(cap_rebase_slot_name(base, 10, out, &err) == FB_ERR_USAGE);
    CHECKF(strstr(err.msg, "63 bytes") && strstr(err.msg, "shorter capture-slot"), "too long: %s", err.msg);
    CHECK(cap_rebase_slot_name("Fusion", 2, out, &err) == FB_ERR_USAGE);
    CHECK(cap_rebase_slot_name("a'b", 2, out, &err) == FB_ERR_USAGE);
    CHECK(cap_rebase_slot_name("", 1, out, &err) == FB_ERR_USAGE);
}

static void parse(void) {
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s"), 1);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_2"), 2);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_9999"), 9999);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_10000"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_1"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_0"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_02"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_2x"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s2"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_x_2"), 0);  /* another family ("s_x") sharing the prefix */
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "t_2"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s_2", "s_2_3"), 3); /* a family whose own name ends in digits */
    CHECK_EQ_INT(cap_rebase_slot_gen("s_2", "s_2"), 1);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_-2"), 0);
    CHECK_EQ_INT(cap_rebase_slot_gen("s", "s_+2"), 0);
    /* every name made parses back to its generation */
    char out[CAP_NAME_MAX + 1];
    fb_err err;
    for (unsigned g = 1; g < 200; g++) {
        if (cap_rebase_slot_name("fb", g, out, &err) != FB_OK || cap_rebase_slot_gen("fb", out) != g) {
            CHECKF(0, "generation %u -> \"%s\" -> %u", g, out, cap_rebase_slot_gen("fb", out));
            return;
        }
    }
    CHECK(1);
}

static void reasons(void) {
    CHECK_EQ_STR(cap_rebase_reason_name(CAP_REBASE_SLOT_MISSING), "slot_missing");
    CHECK_EQ_STR(cap_rebase_reason_name(CAP_REBASE_SLOT_LOST), "slot_lost");
    CHECK_EQ_STR(cap_rebase_reason_name(CAP_REBASE_SCHEMA_ENDED), "schema_ended");
    CHECK_EQ_STR(cap_rebase_reason_name(CAP_REBASE_BASE_UNUSABLE), "base_unusable");
    CHECK_EQ_STR(cap_rebase_reason_name(CAP_REBASE_NONE), "none");
    CHECK_EQ_INT(CAP_REBASE_SLOT_MISSING, 1);
    CHECK_EQ_INT(CAP_REBASE_BASE_UNUSABLE, 4);
}

int main(void) {
    names();
    parse();
    reasons();
    return tap_done();
}
