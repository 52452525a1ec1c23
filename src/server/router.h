/*
 * Maps an HTTP method and path to one of the server's endpoints. Stateless.
 */
#ifndef QUILL_SERVER_ROUTER_H
#define QUILL_SERVER_ROUTER_H

typedef enum quill_endpoint {
    QUILL_ENDPOINT_NOT_FOUND = 0,          /* no such path: 404 */
    QUILL_ENDPOINT_METHOD_NOT_ALLOWED = 1, /* known path, other method: 405 */
    QUILL_ENDPOINT_HEALTH = 2,             /* GET /health */
    QUILL_ENDPOINT_MODELS = 3,             /* GET /v1/models */
    QUILL_ENDPOINT_CHAT = 4,               /* POST /v1/chat/completions */
    QUILL_ENDPOINT_COMPLETIONS = 5,        /* POST /v1/completions */
    QUILL_ENDPOINT_TOKENIZE = 6,           /* POST /tokenize */
    QUILL_ENDPOINT_DETOKENIZE = 7,         /* POST /detokenize */
    QUILL_ENDPOINT_APPLY_TEMPLATE = 8,     /* POST /apply-template */
    QUILL_ENDPOINT_METRICS = 9,            /* GET /metrics (Prometheus text) */
    QUILL_ENDPOINT_STATS = 10,             /* GET /v1/stats (JSON summary) */
    QUILL_ENDPOINT_MODEL = 11,             /* GET /v1/models/{id} */
} quill_endpoint;

/* Returns the endpoint for method ("GET", "POST", ...) and path (without the query string).
 * HEAD reaches the endpoint of GET. */
quill_endpoint quill__router_route(const char *method, const char *path);

/* The Allow header value for path ("GET, HEAD" or "POST"), or NULL for an unknown path.
 * Static storage. */
const char *quill__router_allowed_methods(const char *path);

/* The {id} of a /v1/models/{id} path (borrowed from path), or NULL for any other path. */
const char *quill__router_model_id(const char *path);

/* A short name for logs ("chat", "tokenize", ...). Static storage. */
const char *quill__router_endpoint_name(quill_endpoint endpoint);

/* True for endpoints whose request carries a JSON body. */
int quill__router_takes_body(quill_endpoint endpoint);

#endif
