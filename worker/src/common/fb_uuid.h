/* fb_uuid: random UUIDs, for job ids and throw-away consumer group ids. Below the codec (which validates the
 * contract's canonical form, ev_uuid_valid) so that kafka/ can name an observer without including the codec. */
#ifndef FB_UUID_H
#define FB_UUID_H

/* A random (version 4) UUID in canonical lowercase 8-4-4-4-12 form, NUL-terminated, from libsodium's CSPRNG. */
void fb_uuid_random(char out[37]);

#endif
