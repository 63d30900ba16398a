/* ev_json: an event as one line of JSON, for `fusion-backup event decode`, `tail --json` and logs.
 * Field names and forms follow schemas/SPEC.md: tables as "name" or ["schema","name"], request as hex in
 * {"$bin": "..."} (the golden vectors' JSON form), every key of the event's table present (null when unset). */
#ifndef EV_JSON_H
#define EV_JSON_H

#include <stdio.h>

#include "codec/ev_event.h"

void ev_json_write(FILE *out, const ev_event *ev);
/* A string literal alone: fb_json_string (common/fb_json.h). */

#endif
