#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

// sockaddr_un and its abstract-namespace form (a leading NUL, length without
// a terminator) do not import into Swift in a usable shape.
int aegis_unix_datagram_send(const char *path, const void *buf, size_t len) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    size_t path_len = strlen(path);
    if (path_len == 0) return -EINVAL;
    if (path_len >= sizeof address.sun_path) return -ENAMETOOLONG;
    memcpy(address.sun_path, path, path_len);
    socklen_t address_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
    if (path[0] == '@') {
        address.sun_path[0] = 0;
        address_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t sent;
    do {
        sent = sendto(fd, buf, len, MSG_NOSIGNAL, (struct sockaddr *)&address, address_len);
    } while (sent < 0 && errno == EINTR);
    int error = sent < 0 ? errno : 0;
    close(fd);
    return -error;
}
