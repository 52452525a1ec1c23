/*
 * The HTTP transport: a libmicrohttpd daemon with an internal thread pool, the access handler
 * that collects request bodies and queues the responses, the SSE content reader, and the
 * suspension of connections while they wait for engine events.
 *
 * This file follows these libmicrohttpd (0.9.75) rules:
 * - The response is queued on a later call of the access handler, never the first, because
 *   queueing on the first call makes it send "Connection: close".
 * - suspend/resume needs MHD_ALLOW_SUSPEND_RESUME and is called only from the handler or the
 *   reader.
 * - The reader never returns 0 without suspending, because that makes it spin.
 * - Every connection is resumed before MHD_stop_daemon.
 */
#ifndef QUILL_SERVER_HTTP_SERVER_H
#define QUILL_SERVER_HTTP_SERVER_H

#include "server/server_internal.h"

/* Starts the daemon on server->host:server->port with n_threads workers and stores the bound
 * port in server->port. */
quill_status quill__http_server_start(quill_server *server, int n_threads);

/* Stops accepting new connections. Requests whose body is still arriving get a 503
 * (shutting_down) at once and their connection is closed, and so do new requests on connections
 * already open. Requests whose body is complete keep being served, and their responses carry
 * "Connection: close". Call from any thread; later calls do nothing. */
void quill__http_server_quiesce(quill_server *server);

/* Resumes every suspended connection, then stops the daemon and joins its threads. */
void quill__http_server_stop(quill_server *server);

#endif
