/*
 * The disconnect watchdog: one thread that notices clients who close their socket while their
 * connection is suspended. MHD does not poll a suspended connection, so without the watchdog a
 * request still queued, in a long prefill, or a non-streamed one would run to its end although
 * no client reads the result. Every
 * WATCHDOG_INTERVAL_MS the thread snapshots the socket of each suspended connection, polls them
 * with no lock held, and resumes each one whose peer hung up after marking its waker with
 * is_peer_gone. The connection's MHD thread then ends the response with an error, and
 * on_completed cancels the engine requests and records the disconnect.
 *
 * Locks: server->mutex, then a waker's mutex, as everywhere in the server (server_internal.h).
 * The thread owns nothing but its stack.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "server/server_internal.h"

/* Poll period in milliseconds: the longest a departed client's request keeps running while it
 * is suspended, plus one engine step for the cancellation to take effect. */
#define WATCHDOG_INTERVAL_MS 50

/* One suspended connection as the snapshot recorded it. */
typedef struct watched_socket {
    quill_waker *waker;  /* pooled, so valid until the server is destroyed */
    uint64_t binding;    /* waker->binding at the snapshot */
} watched_socket;

/* Copies the suspended connections' sockets into sockets and fds, growing both arrays.
 * Returns the count, or -1 when memory ran out (the round is skipped). */
static int64_t snapshot_suspended(quill_server *server, watched_socket **sockets,
                                  struct pollfd **fds, size_t *capacity) {
    int64_t n_watched = 0;
    bool is_ok = true;
    pthread_mutex_lock(&server->mutex);
    for (quill_waker *waker = server->wakers_all; waker != NULL && is_ok;
         waker = waker->next_all) {
        pthread_mutex_lock(&waker->mutex);
        if (waker->connection != NULL && waker->is_suspended) {
            /* A suspended connection is not closed by MHD, so its socket is open and the
             * descriptor cannot be reused until on_completed changes the waker's binding. */
            const union MHD_ConnectionInfo *info = MHD_get_connection_info(
                waker->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
            if ((size_t)n_watched == *capacity) {
                size_t grown_capacity = *capacity > 0 ? *capacity * 2 : 16;
                watched_socket *grown_sockets = quill__realloc_array(*sockets, grown_capacity,
                                                                     sizeof(**sockets));
                if (grown_sockets != NULL) {
                    *sockets = grown_sockets;
                }
                struct pollfd *grown_fds = quill__realloc_array(*fds, grown_capacity,
                                                                sizeof(**fds));
                if (grown_fds != NULL) {
                    *fds = grown_fds;
                }
                is_ok = grown_sockets != NULL && grown_fds != NULL;
                if (is_ok) {
                    *capacity = grown_capacity;
                }
            }
            if (is_ok && info != NULL) {
                (*sockets)[n_watched].waker = waker;
                (*sockets)[n_watched].binding = waker->binding;
                (*fds)[n_watched].fd = info->connect_fd;
                (*fds)[n_watched].events = POLLRDHUP;
                (*fds)[n_watched].revents = 0;
                n_watched++;
            }
        }
        pthread_mutex_unlock(&waker->mutex);
    }
    pthread_mutex_unlock(&server->mutex);
    return is_ok ? n_watched : -1;
}

/* Resumes the waker's connection if it is still the one polled and still suspended. Returns
 * true when it did. */
static bool resume_departed(quill_waker *waker, uint64_t binding) {
    bool is_resumed = false;
    pthread_mutex_lock(&waker->mutex);
    if (waker->connection != NULL && waker->binding == binding && waker->is_suspended) {
        atomic_store(&waker->is_peer_gone, true);
        waker->is_suspended = false;
        MHD_resume_connection(waker->connection);
        is_resumed = true;
    }
    pthread_mutex_unlock(&waker->mutex);
    return is_resumed;
}

/* Waits one interval on watchdog_cond. Returns false once the watchdog must stop. */
static bool wait_interval(quill_server *server) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_nsec += (long)WATCHDOG_INTERVAL_MS * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&server->mutex);
    while (!server->is_watchdog_stopping) {
        if (pthread_cond_timedwait(&server->watchdog_cond, &server->mutex, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    bool keeps_running = !server->is_watchdog_stopping;
    pthread_mutex_unlock(&server->mutex);
    return keeps_running;
}

static void *run_watchdog(void *argument) {
    quill_server *server = argument;
    watched_socket *sockets = NULL;
    struct pollfd *fds = NULL;
    size_t capacity = 0;

    while (wait_interval(server)) {
        int64_t n_watched = snapshot_suspended(server, &sockets, &fds, &capacity);
        if (n_watched <= 0) {
            continue;
        }

        /* POLLHUP and POLLERR are always reported; POLLRDHUP means the peer sent FIN.
         * NOTE: a client that half-closes its sending side but still reads counts as gone, so
         * its request is cancelled; HTTP clients do not do this while awaiting a response. */
        if (poll(fds, (nfds_t)n_watched, 0) <= 0) {
            continue;
        }
        for (int64_t i = 0; i < n_watched; i++) {
            bool is_gone = (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
            if (is_gone && resume_departed(sockets[i].waker, sockets[i].binding)) {
                QUILL_LOG_DEBUG("server", "client closed a suspended connection; cancelling",
                                "fd=%d", fds[i].fd);
            }
        }
    }
    quill__free(fds);
    quill__free(sockets);
    return NULL;
}

quill_status quill__watchdog_start(quill_server *server) {
    int error = pthread_create(&server->watchdog_thread, NULL, run_watchdog, server);
    if (error != 0) {
        char reason[128];
        return quill_error_set(QUILL_ERR_IO,
                               "server: cannot start the disconnect watchdog thread: %s; free "
                               "threads or memory and retry",
                               strerror_r(error, reason, sizeof(reason)));
    }
    server->has_watchdog = true;
    return QUILL_OK;
}

void quill__watchdog_stop(quill_server *server) {
    if (!server->has_watchdog) {
        return;
    }
    pthread_mutex_lock(&server->mutex);
    server->is_watchdog_stopping = true;
    pthread_cond_broadcast(&server->watchdog_cond);
    pthread_mutex_unlock(&server->mutex);
    pthread_join(server->watchdog_thread, NULL);
    server->has_watchdog = false;
}
