#define _GNU_SOURCE
#include "CSupport.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int aegis_tcp_listen(const char *host, uint16_t port, int backlog, int reuse_port) {
    struct sockaddr_storage storage;
    memset(&storage, 0, sizeof storage);
    socklen_t length;
    int family;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&storage;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&storage;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        family = AF_INET;
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        length = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        length = sizeof *v6;
    } else {
        return -EINVAL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&storage, length) < 0 ||
        listen(fd, backlog) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int aegis_tcp_accept(int listen_fd) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int aegis_tcp_accept_from(int listen_fd, uint8_t *peer16) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    int fd = accept4(listen_fd, (struct sockaddr *)&storage, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(peer16, 0, 16);
    if (storage.ss_family == AF_INET) {
        peer16[10] = 0xff;
        peer16[11] = 0xff;
        memcpy(peer16 + 12, &((struct sockaddr_in *)&storage)->sin_addr, 4);
    } else if (storage.ss_family == AF_INET6) {
        memcpy(peer16, &((struct sockaddr_in6 *)&storage)->sin6_addr, 16);
    }
    return fd;
}

int aegis_socket_local_port(int fd) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    if (getsockname(fd, (struct sockaddr *)&storage, &length) < 0) return -errno;
    if (storage.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&storage)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&storage)->sin6_port);
}

ssize_t aegis_read(int fd, void *buf, size_t len) {
    ssize_t n = read(fd, buf, len);
    return n < 0 ? -errno : n;
}

// Sockets on the request path: recvfrom/sendto through syscall(2) rather
// than read/write. The libc wrappers of read/write are cancellation points
// that toggle the thread's cancel state around every call, and write(2) on a
// socket goes through the VFS (file position lock, iov_iter set-up) before
// reaching the socket layer; sendto/recvfrom enter the socket layer directly.
// Nothing here uses thread cancellation.
ssize_t aegis_socket_receive(int fd, void *buf, size_t len) {
    long n = syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
    return n < 0 ? -errno : n;
}

ssize_t aegis_socket_send(int fd, const void *buf, size_t len) {
    long n = syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
    return n < 0 ? -errno : n;
}

ssize_t aegis_write(int fd, const void *buf, size_t len) {
    ssize_t n = write(fd, buf, len);
    return n < 0 ? -errno : n;
}

int aegis_close(int fd) {
    return close(fd) < 0 ? -errno : 0;
}

int aegis_socket_abort_on_close(int fd) {
    struct linger linger = {.l_onoff = 1, .l_linger = 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger) < 0 ? -errno : 0;
}

int aegis_tcp_connect(const char *host, uint16_t port, unsigned user_timeout_ms, const char *source_host) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo *found = NULL;
    if (getaddrinfo(host, service, &hints, &found) != 0 || found == NULL) return -EHOSTUNREACH;
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int error = errno;
        freeaddrinfo(found);
        return -error;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (user_timeout_ms > 0) setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    if (source_host != NULL && source_host[0] != 0 && found->ai_family == AF_INET) {
        struct sockaddr_in source;
        memset(&source, 0, sizeof source);
        source.sin_family = AF_INET;
        /* Leave from the node's own address, not the route's default
           (127.0.0.1 for every loopback peer): peers and firewall rules
           then see which node a link belongs to. */
        if (inet_pton(AF_INET, source_host, &source.sin_addr) == 1 && source.sin_addr.s_addr != htonl(INADDR_ANY)
            && bind(fd, (struct sockaddr *)&source, sizeof source) < 0) {
            int bind_error = errno;
            close(fd);
            freeaddrinfo(found);
            return -bind_error;
        }
    }
    int result = connect(fd, found->ai_addr, found->ai_addrlen);
    int error = errno;
    freeaddrinfo(found);
    if (result < 0 && error != EINPROGRESS) {
        close(fd);
        return -error;
    }
    return fd;
}

int aegis_socket_pending_error(int fd) {
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) return errno;
    return error;
}

int aegis_socket_peer_host(int fd, char *buf, size_t len) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    if (getpeername(fd, (struct sockaddr *)&storage, &length) < 0) return -errno;
    const void *address = storage.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&storage)->sin_addr
                                                       : (const void *)&((struct sockaddr_in6 *)&storage)->sin6_addr;
    if (inet_ntop(storage.ss_family, address, buf, (socklen_t)len) == NULL) return -errno;
    return 0;
}

int aegis_socket_peek_byte(int fd) {
    unsigned char byte;
    ssize_t n;
    do {
        n = recv(fd, &byte, 1, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return -ENOTCONN;
    return byte;
}
