#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

const uint32_t AEGIS_EPOLLIN = EPOLLIN;
const uint32_t AEGIS_EPOLLOUT = EPOLLOUT;
const uint32_t AEGIS_EPOLLERR = EPOLLERR;
const uint32_t AEGIS_EPOLLHUP = EPOLLHUP;
const uint32_t AEGIS_EPOLLRDHUP = EPOLLRDHUP;
const uint32_t AEGIS_EPOLLET = EPOLLET;

int aegis_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int control(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = {.events = events, .data.u64 = token};
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int aegis_epoll_add(int epfd, int fd, uint32_t events, uint64_t token) {
    return control(epfd, EPOLL_CTL_ADD, fd, events, token);
}

int aegis_epoll_modify(int epfd, int fd, uint32_t events, uint64_t token) {
    return control(epfd, EPOLL_CTL_MOD, fd, events, token);
}

int aegis_epoll_remove(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

// struct epoll_event is packed on x86_64, so it cannot be handed to Swift
// as-is; copy into the plain struct above. n <= 256.
static int copy_out(const struct epoll_event *raw, int n, aegis_epoll_event *events) {
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        events[i].events = raw[i].events;
        events[i].token = raw[i].data.u64;
    }
    return n;
}

int aegis_epoll_wait(int epfd, aegis_epoll_event *events, int max_events, int timeout_ms) {
    struct epoll_event raw[256];
    if (max_events > 256) max_events = 256;
    return copy_out(raw, epoll_wait(epfd, raw, max_events, timeout_ms), events);
}

// Cleared for good the first time epoll_pwait2 fails for a reason other
// than a signal: kernels before 5.11 answer ENOSYS, and a seccomp filter that
// does not list it (SystemCallErrorNumber=EPERM in a unit) answers EPERM.
// Either would otherwise fail every rest at once and turn it into a busy poll.
static atomic_bool pwait2_usable = true;

int aegis_epoll_wait_ns(int epfd, aegis_epoll_event *events, int max_events, int64_t timeout_ns) {
    struct epoll_event raw[256];
    if (max_events > 256) max_events = 256;
    if (timeout_ns < 0) timeout_ns = 0;
    if (atomic_load_explicit(&pwait2_usable, memory_order_relaxed)) {
        struct timespec timeout = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
        int n = epoll_pwait2(epfd, raw, max_events, &timeout, NULL);
        if (n >= 0 || errno == EINTR) return copy_out(raw, n, events);
        atomic_store_explicit(&pwait2_usable, false, memory_order_relaxed);
    }
    // The rest rounds up to epoll_wait's millisecond: longer, never busy.
    int timeout_ms = (int)((timeout_ns + 999999) / 1000000);
    return copy_out(raw, epoll_wait(epfd, raw, max_events, timeout_ms), events);
}
