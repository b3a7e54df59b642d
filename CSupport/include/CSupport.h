// CSupport: the few kernel facilities Swift on Linux cannot import directly.
//
// Why each piece exists:
//  - Glibc's Swift module does not expose <sys/epoll.h>, eventfd, timerfd or
//    accept4 (they need _GNU_SOURCE), so they are declared here.
//  - liburing's helpers are `static inline`; wrapping the few we use in real
//    functions gives Swift stable symbols and keeps <liburing.h> out of every
//    Swift module.
//  - Socket options and CPU affinity take macros/variadic forms that import badly.
//  - CRC32C uses the SSE4.2 instruction, an intrinsic Swift cannot call.
//  - sockaddr_un (for sd_notify's NOTIFY_SOCKET) imports as a tuple of chars.
//
// Every function is a direct wrapper with no policy. Errors come back as
// -errno (never through the global errno), so callers need no thread-local reads.
#ifndef AEGIS_CSUPPORT_H
#define AEGIS_CSUPPORT_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- epoll (epoll.c) -------------------------------------------------------
typedef struct aegis_epoll_event {
    uint32_t events;
    uint64_t token;
} aegis_epoll_event;

extern const uint32_t AEGIS_EPOLLIN;
extern const uint32_t AEGIS_EPOLLOUT;
extern const uint32_t AEGIS_EPOLLERR;
extern const uint32_t AEGIS_EPOLLHUP;
extern const uint32_t AEGIS_EPOLLRDHUP;
extern const uint32_t AEGIS_EPOLLET;

int aegis_epoll_create(void);
int aegis_epoll_add(int epfd, int fd, uint32_t events, uint64_t token);
int aegis_epoll_modify(int epfd, int fd, uint32_t events, uint64_t token);
int aegis_epoll_remove(int epfd, int fd);
/// Waits up to timeout_ms; returns the number of events written or -errno.
int aegis_epoll_wait(int epfd, aegis_epoll_event *events, int max_events, int timeout_ms);

// ---- eventfd / timerfd (eventfd.c) -----------------------------------------
int aegis_eventfd_create(void);             // non-blocking, close-on-exec
int aegis_eventfd_signal(int fd);           // adds 1; -EAGAIN is harmless (counter full)
/// A non-blocking CLOCK_MONOTONIC timerfd firing every interval_ms.
int aegis_timerfd_create_periodic(int interval_ms);
/// Reads and discards the expiration count.
int aegis_timerfd_acknowledge(int fd);

// ---- sockets (sockets.c) ---------------------------------------------------
/// Creates a non-blocking TCP listener bound to host:port (IPv4 or IPv6
/// literal), with SO_REUSEADDR and, when reuse_port is non-zero, SO_REUSEPORT.
int aegis_tcp_listen(const char *host, uint16_t port, int backlog, int reuse_port);
/// accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC, TCP_NODELAY set on the result.
int aegis_tcp_accept(int listen_fd);
/// aegis_tcp_accept that also reports who connected: `peer16` receives the
/// peer's address as 16 bytes of IPv6, an IPv4 peer as ::ffff:a.b.c.d (so
/// one type holds both; protected mode and failed-AUTH counting key on it).
/// Any other family (there is none on a TCP listener) gives all zeros.
int aegis_tcp_accept_from(int listen_fd, uint8_t *peer16);
/// Port the socket is bound to (for port 0 listeners), or -errno.
int aegis_socket_local_port(int fd);
ssize_t aegis_read(int fd, void *buf, size_t len);
ssize_t aegis_write(int fd, const void *buf, size_t len);
// Connected stream sockets only; MSG_NOSIGNAL on send.
ssize_t aegis_socket_receive(int fd, void *buf, size_t len);
ssize_t aegis_socket_send(int fd, const void *buf, size_t len);
int aegis_close(int fd);
/// Sets SO_LINGER 0 so close() sends RST (used for abusive peers only).
int aegis_socket_abort_on_close(int fd);
/// Starts a non-blocking TCP connect to host:port (an IP literal or a name,
/// resolved with getaddrinfo, which blocks: callers are never reactors).
/// Returns the socket (TCP_NODELAY, close-on-exec) with the connect usually
/// still in progress (wait for EPOLLOUT, then read aegis_socket_pending_error),
/// or -errno; a name that does not resolve gives -EHOSTUNREACH.
/// user_timeout_ms > 0 sets TCP_USER_TIMEOUT: data unacknowledged for that
/// long fails the connection instead of being retransmitted for minutes.
int aegis_tcp_connect(const char *host, uint16_t port, unsigned user_timeout_ms, const char *source_host);
/// The connected peer's IP address as text (getpeername), or -errno.
int aegis_socket_peer_host(int fd, char *buf, size_t len);
/// SO_ERROR: 0 once a non-blocking connect succeeded, else its errno (positive).
int aegis_socket_pending_error(int fd);

// ---- process and threads (process.c) ---------------------------------------
int aegis_online_cpus(void);
/// CPUs in the calling thread's affinity mask (taskset, systemd CPUAffinity=,
/// a cpuset); the online count when the mask cannot be read.
int aegis_affinity_cpus(void);
/// Names the calling thread (visible in top -H and /proc; at most 15 bytes used).
int aegis_set_current_thread_name(const char *name);
/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
long aegis_raise_nofile_limit(void);
/// Blocks SIGINT, SIGTERM, SIGHUP and SIGPIPE in the calling thread (threads
/// created afterwards inherit the mask), so only sigwait sees them.
int aegis_block_signals(void);
/// Waits for one of the blocked signals and returns its number.
int aegis_wait_signal(void);
/// Like aegis_wait_signal, but returns 0 when none came within timeout_ms
/// (-EINTR when interrupted by another signal).
int aegis_wait_signal_timeout(int timeout_ms);
extern const int AEGIS_SIGINT;
extern const int AEGIS_SIGTERM;
extern const int AEGIS_SIGHUP;
/// CLOCK_REALTIME in milliseconds (vDSO, no syscall): for TTLs, which must
/// be exact to the millisecond.
int64_t aegis_now_ms(void);
/// CLOCK_REALTIME_COARSE in milliseconds (vDSO, no syscall): up to one
/// kernel tick (4 ms here) behind, so never for TTLs.
int64_t aegis_now_ms_coarse(void);
/// CLOCK_MONOTONIC in nanoseconds.
int64_t aegis_monotonic_ns(void);
/// CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no syscall): for timeouts
/// and deadlines, never for TTLs.
int64_t aegis_monotonic_ms_coarse(void);
/// Bytes malloc would report for this block (malloc_usable_size).
size_t aegis_malloc_usable_size(void *ptr);

// ---- service manager notification (notify.c) -------------------------------
/// Sends one datagram to the AF_UNIX socket at path; a path starting with
/// '@' names an abstract socket (as in systemd's NOTIFY_SOCKET). 0 or -errno.
int aegis_unix_datagram_send(const char *path, const void *buf, size_t len);

// ---- malloc statistics (memory.c) ------------------------------------------
/// glibc's struct mallinfo2, field for field (bytes unless noted).
typedef struct aegis_mallinfo {
    size_t arena;    // non-mmapped space allocated from the system
    size_t ordblks;  // number of free chunks
    size_t smblks;   // number of free fastbin blocks
    size_t hblks;    // number of mmapped regions
    size_t hblkhd;   // space in mmapped regions
    size_t usmblks;  // always 0 (kept for compatibility)
    size_t fsmblks;  // space in freed fastbin blocks
    size_t uordblks; // total allocated space
    size_t fordblks; // total free space
    size_t keepcost; // top-most releasable space
} aegis_mallinfo;
aegis_mallinfo aegis_mallinfo2(void);
/// malloc_trim: returns 1 when memory was released to the system, else 0.
int aegis_malloc_trim(size_t pad);

// ---- io_uring (uring.c) ----------------------------------------------------
/// Opaque ring; the WAL owns one per reactor.
typedef struct aegis_uring aegis_uring;
extern const uint8_t AEGIS_IOSQE_IO_LINK;
aegis_uring *aegis_uring_create(unsigned entries, int *error_out);
void aegis_uring_destroy(aegis_uring *ring);
/// Completions of this ring signal the eventfd (to wake an epoll loop).
int aegis_uring_register_eventfd(aegis_uring *ring, int eventfd);
/// Queues a write at offset; returns 0, or -EBUSY when the submission queue is full.
int aegis_uring_prep_write(aegis_uring *ring, int fd, const void *buf, unsigned len, uint64_t offset, uint64_t user_data, uint8_t sqe_flags);
/// Queues an fdatasync.
int aegis_uring_prep_fdatasync(aegis_uring *ring, int fd, uint64_t user_data, uint8_t sqe_flags);
/// Submits queued entries without waiting; returns the count or -errno.
int aegis_uring_submit(aegis_uring *ring);
/// Pops one completion if available: returns 1 and fills user_data/result, 0 when none.
int aegis_uring_pop_completion(aegis_uring *ring, uint64_t *user_data, int32_t *result);
/// Queues a timer that completes with -ETIME after the given time (fault
/// injection: a delayed error). The two values (seconds, nanoseconds) must
/// stay valid until submitted.
int aegis_uring_prep_timeout(aegis_uring *ring, const int64_t *seconds_and_nanoseconds, uint64_t user_data, uint8_t sqe_flags);
/// Turns every queued entry the kernel has not consumed into a no-op with
/// user data 0 and stores up to `capacity` of their user data; returns how
/// many were withdrawn (0 when the kernel took everything).
int aegis_uring_withdraw_unsubmitted(aegis_uring *ring, uint64_t *user_data_out, int capacity);

// ---- checksums (crc32c.c) ---------------------------------------------------
/// CRC32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
uint32_t aegis_crc32c(uint32_t crc, const void *data, size_t length);
/// The same without the SSE4.2 instruction; the reference for tests.
uint32_t aegis_crc32c_portable(uint32_t crc, const void *data, size_t length);

// ---- build stamp (build_info.c) --------------------------------------------
/// The git commit (full hash) a release build was made from; "" in a build
/// that scripts/release did not stamp.
const char *aegis_build_commit(void);
/// The build date as UTC ISO 8601, taken from the commit's time so that the
/// same commit builds the same bytes; "" when not stamped.
const char *aegis_build_date(void);

#ifdef __cplusplus
}
#endif
#endif
