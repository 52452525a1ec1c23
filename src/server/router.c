/*
 * The route table; see router.h. /v1/... paths are also accepted without the /v1 prefix, as
 * some clients configure a base URL without it.
 */
#include "server/router.h"

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

quill_endpoint quill__router_route(const char *method, const char *path) {
    quill_endpoint result = QUILL_ENDPOINT_NOT_FOUND;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].path, path) != 0) {
            continue;
        }
        if (strcmp(routes[i].method, method) == 0) {
            return routes[i].endpoint;
        }
        result = QUILL_ENDPOINT_METHOD_NOT_ALLOWED;
    }
    return result;
}

int quill__router_takes_body(quill_endpoint endpoint) {
    return endpoint == QUILL_ENDPOINT_CHAT || endpoint == QUILL_ENDPOINT_COMPLETIONS ||
           endpoint == QUILL_ENDPOINT_TOKENIZE || endpoint == QUILL_ENDPOINT_DETOKENIZE ||
           endpoint == QUILL_ENDPOINT_APPLY_TEMPLATE;
}
