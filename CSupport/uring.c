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

// Fault injection (KernelDoor) answers an io_uring operation with an error
// after a delay: a timer through the same ring, so its completion wakes the
// reactor through the eventfd like a real one. `seconds_and_nanoseconds`
// has the layout of struct __kernel_timespec and must stay valid until the
// entry is submitted (the kernel copies it then).
int aegis_uring_prep_timeout(aegis_uring *ring, const int64_t *seconds_and_nanoseconds, uint64_t user_data, uint8_t sqe_flags) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)seconds_and_nanoseconds, 0, 0);
    io_uring_sqe_set_data64(sqe, user_data);
    io_uring_sqe_set_flags(sqe, sqe_flags);
    return 0;
}

// Entries the kernel has not consumed (io_uring_enter failed, or took only
// some) stay in the submission queue, and the next submit would send them.
// The WAL fails their operations instead: each is turned into a no-op with
// user data 0, which the next submit sends harmlessly, and its original
// user data is reported. Without SQPOLL only io_uring_enter on this thread
// moves the kernel's head, so reading it here races with nothing.
int aegis_uring_withdraw_unsubmitted(aegis_uring *ring, uint64_t *user_data_out, int capacity) {
    struct io_uring_sq *sq = &ring->ring.sq;
    unsigned head = *sq->khead;
    int count = 0;
    for (unsigned position = head; position != sq->sqe_tail; position++) {
        struct io_uring_sqe *sqe = &sq->sqes[position & sq->ring_mask];
        if (sqe->user_data == 0) continue;  // withdrawn before, still queued
        if (count < capacity) user_data_out[count] = sqe->user_data;
        count++;
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, 0);
        io_uring_sqe_set_flags(sqe, 0);
    }
    return count;
}
