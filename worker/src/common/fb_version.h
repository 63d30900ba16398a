/* fb_version: the project's version (declared once, in CMakeLists.txt's project()) and the versions of the
 * libraries a binary actually runs with, for `--version` of both binaries and for bug reports. */
#ifndef FB_VERSION_H
#define FB_VERSION_H


/* "0.3.0": the project version this build was made from. */
const char *fb_version(void);

#endif
