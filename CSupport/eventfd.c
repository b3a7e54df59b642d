#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

int aegis_eventfd_create(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int aegis_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) < 0 ? -errno : 0;
}

int aegis_eventfd_drain(int fd) {
    uint64_t value;
    return read(fd, &value, sizeof value) < 0 ? -errno : 0;
}
