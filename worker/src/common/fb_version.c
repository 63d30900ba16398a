/* fb_version: see fb_version.h. FB_VERSION_STRING comes from CMake (target_compile_definitions). */
#include "common/fb_version.h"

#ifndef FB_VERSION_STRING
#error "FB_VERSION_STRING must be defined by the build (CMakeLists.txt)"
#endif

const char *fb_version(void) { return FB_VERSION_STRING; }
