/*
 * A gate for tests that must act while a request is certainly still in the engine: a request's
 * on_event callback blocks the engine thread until the test opens the gate.
 */
#ifndef QUILL_TEST_ENGINE_GATE_H
#define QUILL_TEST_ENGINE_GATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "quill/engine.h"

/* A gate that blocks the engine thread inside a request's on_event call until the test opens
 * it, so that a long request is certainly still running while the test acts. The first
 * n_calls_to_pass calls return at once and the next one waits. quill_test_gate_pass lets a
 * waiting call go and arms the gate again. */
typedef struct quill_test_gate {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int32_t n_calls_to_pass; /* calls that return before the gate stops one */
    int32_t n_releases;      /* times the test let a waiting call go */
    bool is_entered;         /* the engine thread is waiting in the callback */
    bool is_open;            /* the test let it go for good */
} quill_test_gate;

void quill_test_gate_init(quill_test_gate *g);
void quill_test_gate_release(quill_test_gate *g);

/* The on_event callback: returns at once for the first n_calls_to_pass calls, then waits. */
void quill_test_gate_on_event(void *user_data);

/* Waits until the engine thread is held in the callback. */
void quill_test_gate_wait_entered(quill_test_gate *g);

/* Lets the held call and every later one go. */
void quill_test_gate_open(quill_test_gate *g);

/* Lets the waiting call go and stops the call after the next n_calls_to_pass. */
void quill_test_gate_pass(quill_test_gate *g, int32_t n_calls_to_pass);

/* Submits params as a request whose first event blocks the engine thread at g until
 * quill_test_gate_open, and returns it. params comes back without the callback, for the requests
 * that follow. */
quill_request *quill_test_submit_holding(quill_engine *engine, quill_request_params *params,
                                         quill_test_gate *g);

/* Runs end(engine) (a stop or a destroy) in another thread while the engine thread is held at
 * g. Probes are submitted until one fails with QUILL_ERR_CANCELLED, which shows that intake has
 * stopped. Only then does the gate open, so no blocked request can finish first. Accepted probes
 * go to probes[*n_probes], up to max_probes, or are destroyed when probes is NULL. Until the
 * held thread sweeps them they stay open, so the queue may be full (busy) meanwhile. */
void quill_test_end_while_held(quill_engine *engine, const quill_request_params *params,
                               quill_test_gate *g, void *(*end)(void *), quill_request **probes,
                               int *n_probes, int max_probes);

#endif
