/* The engine gate of engine_gate.h. */
#include "engine_gate.h"

#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

void quill_test_gate_init(quill_test_gate *g) {
    pthread_mutex_init(&g->mutex, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->n_calls_to_pass = 0;
    g->n_releases = 0;
    g->is_entered = false;
    g->is_open = false;
}

void quill_test_gate_release(quill_test_gate *g) {
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->mutex);
}

void quill_test_gate_on_event(void *user_data) {
    quill_test_gate *g = user_data;
    pthread_mutex_lock(&g->mutex);
    if (g->n_calls_to_pass > 0) {
        g->n_calls_to_pass--;
        pthread_mutex_unlock(&g->mutex);
        return;
    }
    g->is_entered = true;
    pthread_cond_broadcast(&g->cond);
    int32_t n_releases = g->n_releases;
    while (!g->is_open && g->n_releases == n_releases) {
        pthread_cond_wait(&g->cond, &g->mutex);
    }
    pthread_mutex_unlock(&g->mutex);
}

void quill_test_gate_wait_entered(quill_test_gate *g) {
    pthread_mutex_lock(&g->mutex);
    while (!g->is_entered) {
        pthread_cond_wait(&g->cond, &g->mutex);
    }
    pthread_mutex_unlock(&g->mutex);
}

void quill_test_gate_open(quill_test_gate *g) {
    pthread_mutex_lock(&g->mutex);
    g->is_open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mutex);
}

void quill_test_gate_pass(quill_test_gate *g, int32_t n_calls_to_pass) {
    pthread_mutex_lock(&g->mutex);
    g->n_calls_to_pass = n_calls_to_pass;
    g->is_entered = false;
    g->n_releases++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mutex);
}

quill_request *quill_test_submit_holding(quill_engine *engine, quill_request_params *params,
                                         quill_test_gate *g) {
    params->on_event = quill_test_gate_on_event;
    params->user_data = g;
    quill_request *request = NULL;
    assert_int_equal(quill_engine_submit(engine, params, &request), QUILL_OK);
    quill_test_gate_wait_entered(g);
    params->on_event = NULL;
    params->user_data = NULL;
    return request;
}

void quill_test_end_while_held(quill_engine *engine, const quill_request_params *params,
                               quill_test_gate *g, void *(*end)(void *), quill_request **probes,
                               int *n_probes, int max_probes) {
    pthread_t ender;
    assert_int_equal(pthread_create(&ender, NULL, end, engine), 0);
    for (;;) {
        quill_request *probe = NULL;
        quill_status status = quill_engine_submit(engine, params, &probe);
        if (status == QUILL_ERR_CANCELLED) {
            break;
        }
        assert_true(status == QUILL_OK || status == QUILL_ERR_BUSY);
        if (probe != NULL && probes != NULL) {
            assert_true(*n_probes < max_probes);
            probes[(*n_probes)++] = probe;
        } else {
            quill_request_destroy(probe);
        }
        sched_yield();
    }
    quill_test_gate_open(g);
    assert_int_equal(pthread_join(ender, NULL), 0);
}
