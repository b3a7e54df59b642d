#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

int aegis_eventfd_create(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int aegis_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) < 0 ? -errno : 0;
}

int aegis_timerfd_create_periodic(int interval_ms) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) return -errno;
    struct itimerspec spec = {
        .it_interval = {.tv_sec = interval_ms / 1000, .tv_nsec = (long)(interval_ms % 1000) * 1000000},
        .it_value = {.tv_sec = interval_ms / 1000, .tv_nsec = (long)(interval_ms % 1000) * 1000000},
    };
    if (timerfd_settime(fd, 0, &spec, NULL) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int aegis_timerfd_acknowledge(int fd) {
    uint64_t expirations;
    return read(fd, &expirations, sizeof expirations) < 0 ? -errno : 0;
}
