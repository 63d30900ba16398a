#!/usr/bin/env bash
# layers_test: proves tests/layers.sh fails on a wrong arrow, names it, and passes the tree as it is (ctest runs
# this; tests/run.sh runs the check itself). Each case damages a fresh copy of worker/src in a temporary directory.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK="$REPO/tests/layers.sh"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failed=0
n=0

fresh() { rm -rf "$TMP/src" && cp -R "$REPO/worker/src" "$TMP/src"; }
# case NAME EXPECTED_RC PATTERN...: runs the check on $TMP/src; every PATTERN (grep -E) must be in its output.
case_() {
    local name="$1" want="$2"; shift 2
    n=$((n + 1))
    local out rc
    out="$("$CHECK" "$TMP/src" 2>&1)"; rc=$?
    local ok=1
    [ "$rc" = "$want" ] || ok=0
    for p in "$@"; do printf '%s\n' "$out" | grep -Eq -- "$p" || { ok=0; echo "#   missing in output: $p"; }; done
    if [ "$ok" = 1 ]; then echo "ok $n - $name"; else echo "not ok $n - $name (exit $rc, expected $want)"; printf '#   %s\n' "$out"; failed=$((failed + 1)); fi
}
# adds an include line after the first line of file (relative to $TMP/src)
add_include() { sed -i "1a #include \"$2\"" "$TMP/src/$1"; }

fresh
case_ "the tree as it is passes" 0

fresh; add_include storage/stor.c artifact/arc_format.h
case_ "storage including artifact (a layer above) fails, naming file, line, include and rule" 1 \
    'storage/stor\.c:2 includes "artifact/arc_format\.h": storage may include only itself and common' '1 wrong arrow'

fresh; add_include kafka/kfk_scan.c codec/ev_event.h
case_ "kafka including the codec (a sibling, not below) fails" 1 'kafka/kfk_scan\.c:2 includes "codec/ev_event\.h"'

fresh; add_include common/fb_err.c pg/pgx.h
case_ "common including anything of ours fails" 1 'common/fb_err\.c:2 includes "pg/pgx\.h": common may include only its own headers'

fresh; add_include cmd/cmd_list.c daemon/dmn_worker.h
case_ "cmd including the daemon outside the listed exceptions fails" 1 'cmd/cmd_list\.c:2 includes "daemon/dmn_worker\.h"'

fresh; add_include daemon/dmn_ledger.c cmd/cmd.h
case_ "daemon including cmd (siblings) fails" 1 'daemon/dmn_ledger\.c:2 includes "cmd/cmd\.h"'

fresh; sed -i 's/^\([ \t]*\)#\([ \t]*\)include "pg\/pgx.h"/\1#\2  include "job\/job.h"/' "$TMP/src/dump/dump_catalog.c"
case_ "an include written with spaces after # is still read" 1 'dump/dump_catalog\.c:[0-9]+ includes "job/job\.h"'

fresh; add_include job/job_verify.h nosuch/thing.h
case_ "an include of no module fails" 1 'job/job_verify\.h:2 includes "nosuch/thing\.h".*no module'

fresh; mkdir "$TMP/src/extra" && printf '#include "common/fb_err.h"\n' >"$TMP/src/extra/x.c"
case_ "a folder without a row fails" 1 'folder "extra" has no row'

fresh; mkdir "$TMP/src/storage/drivers" && printf '#include "job/job.h"\n' >"$TMP/src/storage/drivers/y.c"
case_ "a file in a subfolder belongs to its module" 1 'storage/drivers/y\.c:1 includes "job/job\.h": storage may'

fresh; printf '#include "common/fb_err.h"\n' >"$TMP/src/loose.c"
case_ "a source outside any module folder fails" 1 'loose\.c: a source outside any module folder'

fresh; sed -i '/#include "daemon\/dmn_jobs.h"/d' "$TMP/src/cmd/cmd_event.c"
case_ "an exception that matches nothing fails (the list cannot go stale)" 1 \
    'exception "cmd/cmd_event\.c includes daemon/dmn_jobs\.h".*remove it'

fresh; add_include artifact/arc_retention.c arc_chain.h; add_include bin/main_cli.c daemon/dmn_worker.h
case_ "same-module includes (with or without the folder) and downward ones pass" 0

echo "1..$n"
[ "$failed" = 0 ] || { echo "# $failed of $n failed"; exit 1; }
