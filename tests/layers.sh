#!/usr/bin/env bash
# layers: refuses an include that points up the worker's layers (issue 14, section 4).
#
# Usage: tests/layers.sh [SRC_DIR]   (default: worker/src of this repository)
#
# Every "#include "module/file.h"" line of SRC_DIR/*/*.{c,h} is checked against the table below: a module may
# include its own headers and those of the modules its row names, nothing else. A wrong arrow fails with the file,
# the line, the include and the rule it breaks. A new folder under worker/src fails too until it has a row here.
# The table is the machine-checked form of the layer order in CMakeLists.txt's header and the README's "Where
# things live": when a dependency is meant to change, change it here (and there) on purpose.
#
# tests/layers_test.sh proves this check fails on a wrong arrow (ctest runs it); tests/run.sh runs it first.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${1:-$REPO/worker/src}"

# module: the modules it may include besides itself (bottom to top). codec, pg, kafka and storage are siblings:
# none of them includes another. dump and capture are siblings (both move PostgreSQL data to or from the
# storage). cmd and daemon are siblings too, both above job.
RULES='
common:
codec:    common
pg:       common
kafka:    common
storage:  common
artifact: common storage
dump:     common pg storage artifact
capture:  common pg storage artifact
job:      common codec pg kafka storage artifact dump capture
cmd:      common codec pg kafka storage artifact dump capture job
daemon:   common codec pg kafka storage artifact dump capture job
bin:      common codec pg kafka storage artifact dump capture job cmd daemon
'

# Known exceptions, one per line: "file include  reason". Each is a debt, not a rule: the reason says what would
# remove it. An exception that no longer matches any line fails the check, so the list cannot go stale.
ALLOW='
cmd/cmd_event.c daemon/dmn_jobs.h `event run` runs one request exactly as a worker would (ledger, authority, retries, status events), which is dmn_jobs_execute; moving it into job/ means moving dmn_ledger, dmn_status and dmn_metrics with it (issue 14 section 4)
cmd/cmd_backup.c daemon/dmn_recorder.h `backup` (ad hoc) writes its BackupRecord as the recorder would, by building the job.status event and applying it with the recorder; the status builder and the recorder belong in job/ (issue 14 section 4)
cmd/cmd_backup.c daemon/dmn_status.h the same: dmn_status_build, for the event that dmn_recorder_apply applies
'

[ -d "$SRC" ] || { echo "layers: no such directory: $SRC" >&2; exit 2; }

cd "$SRC" || exit 2
# Every C source and header at any depth (the first folder is the module).
files=$(find . -name '*.[ch]' -type f | sed 's|^\./||' | sort)
[ -n "$files" ] || { echo "layers: no sources under $SRC" >&2; exit 2; }

# One awk pass over every source line: the include lines are checked there, so the whole tree takes milliseconds.
# shellcheck disable=SC2086
awk -v rules="$RULES" -v allow="$ALLOW" -v src="$SRC" '
BEGIN {
    n = split(rules, rl, "\n")
    for (i = 1; i <= n; i++) {
        if (rl[i] !~ /:/) continue
        mod = rl[i]; sub(/:.*/, "", mod); gsub(/[ \t]/, "", mod)
        deps = rl[i]; sub(/^[^:]*:/, "", deps)
        known[mod] = 1
        ok[mod, mod] = 1
        rule[mod] = deps; gsub(/^[ \t]+|[ \t]+$/, "", rule[mod])
        m = split(deps, dl, /[ \t]+/)
        for (j = 1; j <= m; j++) if (dl[j] != "") ok[mod, dl[j]] = 1
    }
    n = split(allow, al, "\n")
    for (i = 1; i <= n; i++) {
        if (al[i] ~ /^[ \t]*$/) continue
        split(al[i], f, /[ \t]+/)
        allowed[f[1], f[2]] = 1
        used[f[1], f[2]] = 0
    }
    bad = 0
}
FNR == 1 {
    mod = FILENAME; sub(/\/.*/, "", mod)
    if (FILENAME !~ /\//) {
        printf "layers: %s/%s: a source outside any module folder: put it in the folder of its layer\n", src, FILENAME
        bad++
        nextfile
    }
    if (!(mod in known)) {
        printf "layers: %s/%s: folder \"%s\" has no row in tests/layers.sh: give it one (which modules may it include?)\n", src, FILENAME, mod
        bad++
        nextfile
    }
}
/^[ \t]*#[ \t]*include[ \t]*"/ {
    inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
    to = inc ~ /\// ? inc : mod "/" inc
    tomod = to; sub(/\/.*/, "", tomod)
    if (ok[mod, tomod]) next
    if ((FILENAME, inc) in allowed) { used[FILENAME, inc] = 1; next }
    why = tomod in known ? "" : " (and \"" tomod "\" is no module of worker/src)"
    printf "layers: %s/%s:%d includes \"%s\": %s may include only %s%s; move the code it needs down a layer, or itself up\n", \
           src, FILENAME, FNR, inc, mod, rule[mod] == "" ? "its own headers" : "itself and " rule[mod], why
    bad++
}
END {
    for (k in used) if (!used[k]) {
        split(k, f, SUBSEP)
        printf "layers: the exception \"%s includes %s\" in tests/layers.sh matches no include any more: remove it\n", f[1], f[2]
        bad++
    }
    if (bad) { printf "layers: %d wrong arrow(s) (the layer table is in tests/layers.sh)\n", bad; exit 1 }
}
' $files
