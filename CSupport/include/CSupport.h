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
//  - OpenSSL's API is largely macros, and its headers are large: tls.c
//    wraps the few calls TLS needs and keeps <openssl/ssl.h> out of Swift.
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
/// As aegis_epoll_wait with a timeout in nanoseconds (epoll_pwait2, Linux 5.11):
/// for waits shorter than the millisecond epoll_wait can express.
int aegis_epoll_wait_ns(int epfd, aegis_epoll_event *events, int max_events, int64_t timeout_ns);

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
/// The first unread byte (0-255) without consuming it (MSG_PEEK): how a TLS
/// port tells a ClientHello from a plaintext client. -ENOTCONN when the peer
/// closed, else -errno (-EAGAIN: nothing yet).
int aegis_socket_peek_byte(int fd);

// ---- process and threads (process.c) ---------------------------------------
int aegis_online_cpus(void);
/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from birth, which Swift's
/// Glibc module (no _GNU_SOURCE) cannot ask for. 0, or -errno.
int aegis_pipe_cloexec(int fds[2]);
/// syncfs(2) of the file system holding fd: 0 or -errno (needs _GNU_SOURCE,
/// which Glibc's Swift module lacks).
int aegis_syncfs(int fd);
/// posix_spawn_file_actions_addclosefrom_np(actions, lowest): the child closes
/// every descriptor from `lowest` up (a glibc 2.34 extension, hidden from
/// Swift's Glibc module like pipe2). `actions` is a posix_spawn_file_actions_t *.
/// 0, or an error number.
int aegis_spawn_actions_close_from(void *actions, int lowest);
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

// ---- TLS through OpenSSL (tls.c) ---------------------------------------------
/// An SSL_CTX: certificates, keys and verification settings. Immutable once
/// made, so any thread may make sessions from it; freed by its last session.
typedef struct aegis_tls_context aegis_tls_context;
/// An SSL on one non-blocking socket (socket BIO). Not thread-safe.
typedef struct aegis_tls_session aegis_tls_session;
/// Results of handshake/read/write besides byte counts (0 = handshake done).
extern const int AEGIS_TLS_WANT_READ;   // call again once the socket is readable
extern const int AEGIS_TLS_WANT_WRITE;  // call again once the socket is writable
extern const int AEGIS_TLS_CLOSED;      // the peer closed (close_notify, EOF or reset)
extern const int AEGIS_TLS_FAILED;      // protocol or verification error: aegis_tls_last_error says which
/// A server context from PEM files: TLS 1.2+, no renegotiation. A non-empty
/// ca_file makes client certificates required and verified against it.
/// kernel_offload asks OpenSSL to hand the record layer to the kernel (kTLS)
/// after each handshake where it can. NULL on failure, with a message naming
/// the file in `error`.
aegis_tls_context *aegis_tls_server_context_create(const char *cert_file, const char *key_file, const char *ca_file,
                                                   int kernel_offload, char *error, size_t error_len);
/// A client context: the server is verified against ca_file (empty: the
/// system's store); cert_file/key_file, when given, are presented (mTLS).
aegis_tls_context *aegis_tls_client_context_create(const char *ca_file, const char *cert_file, const char *key_file,
                                                   char *error, size_t error_len);
/// One context for both ends of the links between nodes: cert_file/key_file
/// presented, and the peer's certificate required and verified against
/// ca_file (the cluster CA) whichever side dialled. No host name check.
aegis_tls_context *aegis_tls_peer_context_create(const char *cert_file, const char *key_file, const char *ca_file,
                                                 char *error, size_t error_len);
void aegis_tls_context_free(aegis_tls_context *context);
/// The end of the validity of the certificate the context presents, as
/// OpenSSL prints it ("Dec  1 07:20:24 2026 GMT") into `text`; returns 1
/// when that is past, 0 when not, -1 when the context presents none.
int aegis_tls_certificate_not_after(aegis_tls_context *context, char *text, size_t text_len);
/// A session on fd (which it does not own or close). A client session checks
/// the server's certificate against `host` (a name or an IP literal).
aegis_tls_session *aegis_tls_session_create(aegis_tls_context *context, int fd, int is_server, const char *host);
void aegis_tls_session_free(aegis_tls_session *session);
/// 0 once the handshake is done, else an AEGIS_TLS_* code.
int aegis_tls_handshake(aegis_tls_session *session);
/// Plaintext bytes read or written (>0), else an AEGIS_TLS_* code.
int aegis_tls_read(aegis_tls_session *session, void *buf, int len);
int aegis_tls_write(aegis_tls_session *session, const void *buf, int len);
/// Plaintext bytes already decrypted and not yet read (the socket may be empty).
int aegis_tls_pending(aegis_tls_session *session);
/// 1 when OpenSSL holds input of this session, decrypted or not (read-ahead
/// bytes, a partial record): the socket may signal nothing more for it.
int aegis_tls_has_pending(aegis_tls_session *session);
/// Sends close_notify once, without waiting for the peer's.
int aegis_tls_shutdown(aegis_tls_session *session);
/// The calling thread's first OpenSSL error as text, and its reason code
/// (ERR_GET_REASON); clears the queue.
int aegis_tls_last_error(char *buf, size_t len);
/// The reason code of a required peer certificate that was not sent.
extern const int AEGIS_TLS_REASON_PEER_SENT_NO_CERTIFICATE;
/// The reason code of a peer that closed the connection in the middle of a record.
extern const int AEGIS_TLS_REASON_UNEXPECTED_EOF;
/// "TLSv1.3" and so on.
const char *aegis_tls_version(aegis_tls_session *session);
/// X509_V_OK (0) or why the peer's certificate was refused, and its text.
long aegis_tls_verify_result(aegis_tls_session *session);
const char *aegis_tls_verify_text(long result);
/// The verification results that mean "outside its validity dates".
extern const long AEGIS_TLS_VERIFY_EXPIRED;
extern const long AEGIS_TLS_VERIFY_NOT_YET_VALID;

/// 1 = kernel sends, 2 = kernel receives (bits), 0 = user-space records.
int aegis_tls_kernel_offloaded(aegis_tls_session *session);
const char *aegis_tls_library_version(void);

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
