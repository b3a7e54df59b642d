// malloc statistics and trimming: <malloc.h> is not part of Swift's Glibc
// module, so mallinfo2 and malloc_trim are not visible from Swift without this.
#include "CSupport.h"
#include <malloc.h>

aegis_mallinfo aegis_mallinfo2(void) {
    struct mallinfo2 info = mallinfo2();
    aegis_mallinfo out = {
        .arena = info.arena, .ordblks = info.ordblks, .smblks = info.smblks, .hblks = info.hblks,
        .hblkhd = info.hblkhd, .usmblks = info.usmblks, .fsmblks = info.fsmblks,
        .uordblks = info.uordblks, .fordblks = info.fordblks, .keepcost = info.keepcost,
    };
    return out;
}

int aegis_malloc_trim(size_t pad) {
    return malloc_trim(pad);
}
