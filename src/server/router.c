/*
 * The route table, as described in router.h. /v1/... paths are also accepted without the /v1
 * prefix, as some clients configure a base URL without it. Every path takes one method, so the
 * Allow header of a 405 is that method (plus HEAD for GET).
 */
#include "server/router.h"

#include <stdbool.h>
#include <string.h>

typedef struct route {
    const char *path;
    const char *method;
    quill_endpoint endpoint;
} route;

static const route routes[] = {
    {"/health", "GET", QUILL_ENDPOINT_HEALTH},
    {"/v1/models", "GET", QUILL_ENDPOINT_MODELS},
    {"/models", "GET", QUILL_ENDPOINT_MODELS},
    {"/v1/chat/completions", "POST", QUILL_ENDPOINT_CHAT},
    {"/chat/completions", "POST", QUILL_ENDPOINT_CHAT},
    {"/v1/completions", "POST", QUILL_ENDPOINT_COMPLETIONS},
    {"/completions", "POST", QUILL_ENDPOINT_COMPLETIONS},
    {"/tokenize", "POST", QUILL_ENDPOINT_TOKENIZE},
    {"/detokenize", "POST", QUILL_ENDPOINT_DETOKENIZE},
    {"/apply-template", "POST", QUILL_ENDPOINT_APPLY_TEMPLATE},
    {"/metrics", "GET", QUILL_ENDPOINT_METRICS},
    {"/v1/stats", "GET", QUILL_ENDPOINT_STATS},
    {"/stats", "GET", QUILL_ENDPOINT_STATS},
};

/* Prefix of GET /v1/models/{id}; the id is the rest of the path. */
static const char *const model_prefixes[] = {"/v1/models/", "/models/"};

/* HTTP requires HEAD wherever GET is served; MHD sends a HEAD response without its body. */
static bool method_matches(const char *route_method, const char *method) {
    if (strcmp(route_method, method) == 0) {
        return true;
    }
    return strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0;
}

const char *quill__router_model_id(const char *path) {
    for (size_t i = 0; i < sizeof(model_prefixes) / sizeof(model_prefixes[0]); i++) {
        size_t n_prefix = strlen(model_prefixes[i]);
        if (strncmp(path, model_prefixes[i], n_prefix) == 0 && path[n_prefix] != '\0') {
            return path + n_prefix;
        }
    }
    return NULL;
}

quill_endpoint quill__router_route(const char *method, const char *path) {
    if (quill__router_model_id(path) != NULL) {
        return method_matches("GET", method) ? QUILL_ENDPOINT_MODEL
                                             : QUILL_ENDPOINT_METHOD_NOT_ALLOWED;
    }
    quill_endpoint result = QUILL_ENDPOINT_NOT_FOUND;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].path, path) != 0) {
            continue;
        }
        if (method_matches(routes[i].method, method)) {
            return routes[i].endpoint;
        }
        result = QUILL_ENDPOINT_METHOD_NOT_ALLOWED;
    }
    return result;
}

const char *quill__router_allowed_methods(const char *path) {
    if (quill__router_model_id(path) != NULL) {
        return "GET, HEAD";
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].path, path) == 0) {
            return strcmp(routes[i].method, "GET") == 0 ? "GET, HEAD" : routes[i].method;
        }
    }
    return NULL;
}

const char *quill__router_endpoint_name(quill_endpoint endpoint) {
    static const char *const names[] = {
        "not_found", "method_not_allowed", "health", "models", "chat", "completions",
        "tokenize", "detokenize", "apply_template", "metrics", "stats", "model",
    };
    size_t index = (size_t)endpoint;
    return index < sizeof(names) / sizeof(names[0]) ? names[index] : "unknown";
}

int quill__router_takes_body(quill_endpoint endpoint) {
    return endpoint == QUILL_ENDPOINT_CHAT || endpoint == QUILL_ENDPOINT_COMPLETIONS ||
           endpoint == QUILL_ENDPOINT_TOKENIZE || endpoint == QUILL_ENDPOINT_DETOKENIZE ||
           endpoint == QUILL_ENDPOINT_APPLY_TEMPLATE;
}
