#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

const uint8_t AEGIS_IOSQE_IO_LINK = IOSQE_IO_LINK;

struct aegis_uring {
    struct io_uring ring;
};

aegis_uring *aegis_uring_create(unsigned entries, int *error_out) {
    aegis_uring *wrapper = calloc(1, sizeof *wrapper);
    if (!wrapper) { *error_out = -ENOMEM; return NULL; }
    int result = io_uring_queue_init(entries, &wrapper->ring, 0);
    if (result < 0) { free(wrapper); *error_out = result; return NULL; }
    *error_out = 0;
    return wrapper;
}

void aegis_uring_destroy(aegis_uring *ring) {
    if (!ring) return;
    io_uring_queue_exit(&ring->ring);
    free(ring);
}

int aegis_uring_register_eventfd(aegis_uring *ring, int eventfd) {
    return io_uring_register_eventfd(&ring->ring, eventfd);
}

int aegis_uring_prep_write(aegis_uring *ring, int fd, const void *buf, unsigned len, uint64_t offset, uint64_t user_data, uint8_t sqe_flags) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_write(sqe, fd, buf, len, offset);
    io_uring_sqe_set_data64(sqe, user_data);
    io_uring_sqe_set_flags(sqe, sqe_flags);
    return 0;
}

int aegis_uring_prep_fdatasync(aegis_uring *ring, int fd, uint64_t user_data, uint8_t sqe_flags) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, user_data);
    io_uring_sqe_set_flags(sqe, sqe_flags);
    return 0;
}

int aegis_uring_submit(aegis_uring *ring) {
    return io_uring_submit(&ring->ring);
}

int aegis_uring_pop_completion(aegis_uring *ring, uint64_t *user_data, int32_t *result) {
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_peek_cqe(&ring->ring, &cqe) != 0 || !cqe) return 0;
    *user_data = io_uring_cqe_get_data64(cqe);
    *result = cqe->res;
    io_uring_cqe_seen(&ring->ring, cqe);
    return 1;
}
