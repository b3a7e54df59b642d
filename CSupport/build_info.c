// The commit and build date a release build was made from. scripts/release
// writes build_stamp.h beside this file (it is git-ignored) so that a plain
// `swift build` needs no extra flags: without the header both are empty and
// the Swift side reports an unstamped developer build honestly. A header
// rather than -Xcc -D flags, because flags that change with every commit
// would make SwiftPM recompile every Swift module that imports CSupport.
#include "CSupport.h"

#if __has_include("build_stamp.h")
#include "build_stamp.h"
#endif

#ifndef AEGIS_BUILD_COMMIT
#define AEGIS_BUILD_COMMIT ""
#endif
#ifndef AEGIS_BUILD_DATE
#define AEGIS_BUILD_DATE ""
#endif

const char *aegis_build_commit(void) { return AEGIS_BUILD_COMMIT; }
const char *aegis_build_date(void) { return AEGIS_BUILD_DATE; }
