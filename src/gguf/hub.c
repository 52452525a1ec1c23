/*
 * Hugging Face Hub downloads with libcurl's easy interface. A reference is validated strictly
 * before it becomes part of a URL or a cache path, so it can never leave the cache folder. A
 * download writes `FILE.part` under an exclusive flock and resumes it with an HTTP Range request.
 * The final size is checked against what the server announced (Content-Length for a 200,
 * Content-Range's total for a 206) before the rename into place, so a file at its final path is
 * always complete. Every call runs on the caller's thread with its own curl handle.
 */
#include "quill/hub.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/strbuf.h"

enum {
    HUB_MAX_NAME_BYTES = 96,                    /* length bound for OWNER and REPO */
    HUB_MAX_FILE_BYTES = 255,                   /* FILE, NAME_MAX on Linux file systems */
    HUB_MAX_LISTING_BYTES = 16 * 1024 * 1024,   /* repository listing JSON */
    HUB_MAX_ERROR_BODY_BYTES = 200,             /* start of an error reply kept for messages */
    HUB_CONNECT_TIMEOUT_S = 30,                 /* connection setup */
    HUB_STALL_TIMEOUT_S = 60,                   /* abort after this long below 1 byte/s */
};

static const char *const hub_default_base_url = "https://huggingface.co";

/* Name, in a repository's cache folder, of the file that records which FILE a reference without
 * FILE chose from the listing. */
static const char *const hub_choice_name = ".default";

/* A validated reference. Every part contains only [A-Za-z0-9._-] (FILE also '/'). */
typedef struct hub_reference {
    char owner[HUB_MAX_NAME_BYTES + 1]; /* user or organization */
    char repo[HUB_MAX_NAME_BYTES + 1];  /* repository */
    char file[HUB_MAX_FILE_BYTES + 1];  /* file in the repository, or "" */
} hub_reference;

/* State of one HTTP transfer into the .part file. */
typedef struct hub_download {
    const char *url;          /* requested URL, for messages */
    const char *part_path;    /* FILE.part */
    const char *display_name; /* FILE, for the progress bar */
    int fd;                   /* open .part file */
    bool is_locked;           /* this process holds the flock on fd */
    int64_t resume_bytes;     /* bytes already in .part when the request started */
    long http_status;         /* status of the latest response */
    int64_t content_length;   /* Content-Length of the latest response, or -1 */
    int64_t range_start;      /* first byte from Content-Range, or -1 */
    int64_t range_total;      /* total size from Content-Range, or -1 */
    bool is_body_started;     /* the first body byte of the final response arrived */
    bool is_restart_needed;   /* a 206 started at an unexpected byte */
    int write_errno;          /* errno of a failed write to .part, or 0 */
    quill_strbuf error_body;  /* start of a non-2xx reply body */
    bool show_progress;       /* stderr is a terminal */
    int last_percent;         /* last percentage drawn, or -1 */
} hub_download;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_OK;

static void curl_init_once(void) {
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- References and paths ------------------------------------------------------------------ */

static bool is_name_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

/* Checks one path component: allowed characters, and neither "." nor any "..". */
static bool is_valid_component(const char *text, size_t n_bytes, size_t max_bytes) {
    if (n_bytes == 0 || n_bytes > max_bytes) {
        return false;
    }
    for (size_t i = 0; i < n_bytes; i++) {
        if (!is_name_char(text[i])) {
            return false;
        }
        if (text[i] == '.' && i + 1 < n_bytes && text[i + 1] == '.') {
            return false;
        }
    }
    return !(n_bytes == 1 && text[0] == '.');
}

/* FILE: components separated by single '/', no leading or trailing '/'. */
static bool is_valid_file(const char *text, size_t n_bytes) {
    if (n_bytes == 0 || n_bytes > HUB_MAX_FILE_BYTES) {
        return false;
    }
    size_t start = 0;
    for (size_t i = 0; i <= n_bytes; i++) {
        if (i == n_bytes || text[i] == '/') {
            if (!is_valid_component(text + start, i - start, HUB_MAX_FILE_BYTES)) {
                return false;
            }
            start = i + 1;
        }
    }
    return true;
}

static quill_status invalid_reference(const char *text, const char *reason) {
    return quill_error_set(QUILL_ERR_INVALID_ARG,
                           "hub: invalid reference '%s': %s; expected OWNER/REPO[:FILE] made of "
                           "letters, digits, '.', '_' and '-', without '..'",
                           text, reason);
}

static quill_status parse_reference(const char *text, hub_reference *out) {
    memset(out, 0, sizeof(*out));
    if (text == NULL) {
        return invalid_reference("(null)", "no reference");
    }
    const char *colon = strchr(text, ':');
    const char *slash = strchr(text, '/');
    size_t n_repo_part = colon != NULL ? (size_t)(colon - text) : strlen(text);
    if (slash == NULL || (size_t)(slash - text) >= n_repo_part) {
        return invalid_reference(text, "missing '/' between OWNER and REPO");
    }
    size_t n_owner = (size_t)(slash - text);
    size_t n_repo = n_repo_part - n_owner - 1;
    if (!is_valid_component(text, n_owner, HUB_MAX_NAME_BYTES)) {
        return invalid_reference(text, "invalid OWNER");
    }
    if (!is_valid_component(slash + 1, n_repo, HUB_MAX_NAME_BYTES)) {
        return invalid_reference(text, "invalid REPO");
    }
    memcpy(out->owner, text, n_owner);
    memcpy(out->repo, slash + 1, n_repo);
    if (colon != NULL) {
        if (!is_valid_file(colon + 1, strlen(colon + 1))) {
            return invalid_reference(text, "invalid FILE");
        }
        memcpy(out->file, colon + 1, strlen(colon + 1));
    }
    return QUILL_OK;
}

quill_status quill_hub_check_reference(const char *text) {
    hub_reference reference;
    return parse_reference(text, &reference);
}

bool quill_hub_is_reference(const char *text) {
    hub_reference reference;
    bool is_reference = parse_reference(text, &reference) == QUILL_OK;
    quill_error_clear();
    return is_reference;
}

/* Returns the cache folder as a new string. */
static quill_status cache_dir(char **out) {
    *out = NULL;
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    const char *quill_cache = getenv("QUILL_CACHE_DIR");
    const char *xdg_cache = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (quill_cache != NULL && quill_cache[0] != '\0') {
        quill__strbuf_append_cstr(&buffer, quill_cache);
    } else if (xdg_cache != NULL && xdg_cache[0] != '\0') {
        quill__strbuf_appendf(&buffer, "%s/quill", xdg_cache);
    } else if (home != NULL && home[0] != '\0') {
        quill__strbuf_appendf(&buffer, "%s/.cache/quill", home);
    } else {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "hub: no cache folder: QUILL_CACHE_DIR, XDG_CACHE_HOME and HOME "
                               "are all unset; set QUILL_CACHE_DIR");
    }
    *out = quill__strbuf_take(&buffer);
    quill__strbuf_release(&buffer);
    if (*out == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
    }
    return QUILL_OK;
}

/* Returns "<cache>/hub/OWNER/REPO" as a new string. */
static quill_status repo_dir(const hub_reference *reference, char **out) {
    char *cache = NULL;
    quill_status status = cache_dir(&cache);
    *out = NULL;
    if (status != QUILL_OK) {
        return status;
    }
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill__strbuf_appendf(&buffer, "%s/hub/%s/%s", cache, reference->owner, reference->repo);
    *out = quill__strbuf_take(&buffer);
    quill__strbuf_release(&buffer);
    quill__free(cache);
    return *out == NULL ? quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory") : QUILL_OK;
}

/* Creates every missing folder above path's last component, like `mkdir -p $(dirname path)`.
 * Stores in *n_existing_bytes the length of the longest prefix of path that already existed as
 * a folder, so remove_created_dirs can undo exactly what this call created. */
static quill_status make_parent_dirs(const char *path, size_t *n_existing_bytes) {
    *n_existing_bytes = strlen(path);
    char *copy = quill__strdup(path);
    if (copy == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
    }
    bool is_created = false;
    quill_status status = QUILL_OK;
    for (char *p = copy + 1; *p != '\0' && status == QUILL_OK; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        int result = mkdir(copy, 0755);
        if (result == 0 && !is_created) {
            is_created = true;
            *n_existing_bytes = (size_t)(strrchr(copy, '/') - copy);
        }
        if (result != 0 && errno != EEXIST) {
            int saved_errno = errno;
            char reason[128];
            status = quill_error_set(QUILL_ERR_IO,
                                     "hub: cannot create the cache folder '%s': %s; set "
                                     "QUILL_CACHE_DIR to a writable folder",
                                     copy, strerror_r(saved_errno, reason, sizeof(reason)));
        }
        *p = '/';
    }
    quill__free(copy);
    return status;
}

/* Removes the folders above path's last component that are empty and lie below the first
 * n_existing_bytes of path, deepest first: the ones make_parent_dirs created, unless something
 * was stored in them since. */
static void remove_created_dirs(const char *path, size_t n_existing_bytes) {
    char *copy = quill__strdup(path);
    if (copy == NULL) {
        return;
    }
    for (char *slash = strrchr(copy, '/'); slash != NULL; slash = strrchr(copy, '/')) {
        *slash = '\0';
        if (strlen(copy) <= n_existing_bytes || rmdir(copy) != 0) {
            break;
        }
    }
    quill__free(copy);
}

static bool is_regular_file(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 && S_ISREG(info.st_mode);
}

static bool has_gguf_suffix(const char *name) {
    size_t length = strlen(name);
    return length > 5 && strcasecmp(name + length - 5, ".gguf") == 0;
}

/* ---- Choosing a file ----------------------------------------------------------------------- */

/* Among names, picks one containing Q4_K_M (any case), else the first, or NULL when empty.
 * NOTE: a model split into shards (`-00001-of-00003.gguf`) is not recognized, so only the
 * chosen shard is downloaded. */
static const char *pick_gguf(const char *const *names, size_t n_names) {
    for (size_t i = 0; i < n_names; i++) {
        if (strcasestr(names[i], "q4_k_m") != NULL) {
            return names[i];
        }
    }
    return n_names > 0 ? names[0] : NULL;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Looks for a complete .gguf already in the repository's cache folder, so a reference without
 * FILE works offline. Stores "" when there is none. */
static quill_status pick_cached_file(const char *dir_path, hub_reference *reference) {
    DIR *dir = opendir(dir_path);
    if (dir == NULL) {
        return QUILL_OK;
    }

    const char *names[256];
    char *owned[256];
    size_t n_names = 0;
    quill_status status = QUILL_OK;
    struct dirent *entry = NULL;
    while ((entry = readdir(dir)) != NULL && n_names < 256) {
        if (!has_gguf_suffix(entry->d_name) ||
            !is_valid_file(entry->d_name, strlen(entry->d_name))) {
            continue;
        }
        owned[n_names] = quill__strdup(entry->d_name);
        if (owned[n_names] == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
            break;
        }
        names[n_names] = owned[n_names];
        n_names++;
    }
    closedir(dir);

    if (status == QUILL_OK) {
        qsort(names, n_names, sizeof(names[0]), compare_names);
        const char *chosen = pick_gguf(names, n_names);
        if (chosen != NULL) {
            snprintf(reference->file, sizeof(reference->file), "%s", chosen);
        }
    }

    for (size_t i = 0; i < n_names; i++) {
        quill__free(owned[i]);
    }
    return status;
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

/* Builds the request headers: the bearer token from HF_TOKEN when set. */
static quill_status make_headers(struct curl_slist **out) {
    *out = NULL;
    const char *token = getenv("HF_TOKEN");
    if (token == NULL || token[0] == '\0') {
        return QUILL_OK;
    }
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill__strbuf_appendf(&buffer, "Authorization: Bearer %s", token);
    if (!buffer.is_failed) {
        *out = curl_slist_append(NULL, buffer.data);
    }
    quill__strbuf_release(&buffer);
    return *out == NULL ? quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory") : QUILL_OK;
}

static CURL *make_handle(const char *url, struct curl_slist *headers, char *error_buffer) {
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        return NULL;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "quill/0.1.0");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)HUB_CONNECT_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)HUB_STALL_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
    if (headers != NULL) {
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    }
    return curl;
}

/* Maps a failed transfer to QUILL_ERR_IO. When no connection could be made (no network, DNS
 * failure, refused), next_step is replaced by advice that fits an offline machine. */
static quill_status network_error(const char *url, CURLcode code, const char *error_buffer,
                                  const char *next_step) {
    const char *reason = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
    if (code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
        code == CURLE_COULDNT_CONNECT) {
        return quill_error_set(QUILL_ERR_IO,
                               "hub: request to %s failed: %s; the network or the server is "
                               "unreachable, check the network connection and retry, or pass a "
                               "local GGUF file with -m PATH",
                               url, reason);
    }
    return quill_error_set(QUILL_ERR_IO, "hub: request to %s failed: %s; %s", url, reason,
                           next_step);
}

/* Maps a non-2xx status to an error that names the URL and the fix. */
static quill_status http_error(const char *url, long http_status, const quill_strbuf *body) {
    const char *detail = body != NULL && body->data != NULL ? body->data : "";
    if (http_status == 404) {
        return quill_error_set(QUILL_ERR_NOT_FOUND,
                               "hub: %s returned HTTP 404; check OWNER/REPO and the file name "
                               "(list the files at the repository page)",
                               url);
    }
    if (http_status == 401 || http_status == 403) {
        return quill_error_set(QUILL_ERR_UPSTREAM,
                               "hub: %s returned HTTP %ld; the repository is private or gated, "
                               "accept its terms and set HF_TOKEN to a token that can read it",
                               url, http_status);
    }
    return quill_error_set(QUILL_ERR_UPSTREAM, "hub: %s returned HTTP %ld %.*s; retry later", url,
                           http_status, HUB_MAX_ERROR_BODY_BYTES, detail);
}

static size_t append_to_buffer(char *data, size_t size, size_t n_items, void *context) {
    quill_strbuf *buffer = context;
    size_t n_bytes = size * n_items;
    return quill__strbuf_append(buffer, data, n_bytes) == QUILL_OK ? n_bytes : 0;
}

/* GETs url into body (at most limit bytes) and stores the final HTTP status. */
static quill_status http_get(const char *url, quill_strbuf *body, long *http_status) {
    *http_status = 0;
    char error_buffer[CURL_ERROR_SIZE] = {0};
    struct curl_slist *headers = NULL;
    CURL *curl = NULL;
    quill_status status = make_headers(&headers);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    curl = make_handle(url, headers, error_buffer);
    if (curl == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: cannot create a curl handle for %s", url);
        goto cleanup;
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_to_buffer);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    CURLcode code = curl_easy_perform(curl);
    if (code == CURLE_WRITE_ERROR && body->is_failed) {
        status = quill_error_set(QUILL_ERR_UPSTREAM,
                                 "hub: the reply of %s exceeds %zu bytes; pass the file name as "
                                 "OWNER/REPO:FILE",
                                 url, body->limit_bytes);
        goto cleanup;
    }
    if (code != CURLE_OK) {
        status = network_error(url, code, error_buffer, "check the network connection and retry");
        goto cleanup;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_status);

cleanup:
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    return status;
}

/* Collects the .gguf names of a listing reply: {"siblings": [{"rfilename": "..."}, ...]}. */
static quill_status pick_listed_file(const char *url, const quill_strbuf *body,
                                     hub_reference *reference) {
    json_object *root = json_tokener_parse(body->data != NULL ? body->data : "");
    json_object *siblings = NULL;
    if (root == NULL || !json_object_object_get_ex(root, "siblings", &siblings) ||
        !json_object_is_type(siblings, json_type_array)) {
        json_object_put(root);
        return quill_error_set(QUILL_ERR_UPSTREAM,
                               "hub: the listing from %s has no \"siblings\" array; pass the file "
                               "name as OWNER/REPO:FILE",
                               url);
    }
    size_t n_items = json_object_array_length(siblings);
    const char **names = quill__malloc_array(n_items, sizeof(*names));
    quill_strbuf found;
    quill__strbuf_init(&found);
    quill_status status = QUILL_OK;
    if (names == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory for %zu file names",
                                 n_items);
        goto cleanup;
    }
    size_t n_names = 0;
    for (size_t i = 0; i < n_items; i++) {
        json_object *name = NULL;
        json_object *item = json_object_array_get_idx(siblings, i);
        if (!json_object_object_get_ex(item, "rfilename", &name) ||
            !json_object_is_type(name, json_type_string)) {
            continue;
        }
        const char *text = json_object_get_string(name);
        if (found.length < 300) {
            quill__strbuf_appendf(&found, "%s%s", found.length > 0 ? ", " : "", text);
        }
        if (has_gguf_suffix(text) && is_valid_file(text, strlen(text))) {
            names[n_names++] = text;
        }
    }
    const char *chosen = pick_gguf(names, n_names);
    if (chosen == NULL) {
        status = quill_error_set(QUILL_ERR_NOT_FOUND,
                                 "hub: %s/%s has no .gguf file (found: %s); choose a repository "
                                 "with GGUF files or pass OWNER/REPO:FILE",
                                 reference->owner, reference->repo,
                                 found.length > 0 ? found.data : "nothing");
        goto cleanup;
    }
    snprintf(reference->file, sizeof(reference->file), "%s", chosen);

cleanup:
    quill__strbuf_release(&found);
    quill__free(names);
    json_object_put(root);
    return status;
}

/* Asks the listing API which .gguf file to use. */
static quill_status choose_remote_file(const char *base_url, hub_reference *reference) {
    quill_strbuf url;
    quill_strbuf body;
    quill__strbuf_init(&url);
    quill__strbuf_init(&body);
    body.limit_bytes = HUB_MAX_LISTING_BYTES;
    long http_status = 0;
    quill_status status = quill__strbuf_appendf(&url, "%s/api/models/%s/%s", base_url,
                                                reference->owner, reference->repo);
    if (status != QUILL_OK) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
        goto cleanup;
    }
    status = http_get(url.data, &body, &http_status);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    if (http_status < 200 || http_status > 299) {
        status = http_error(url.data, http_status, &body);
        goto cleanup;
    }
    status = pick_listed_file(url.data, &body, reference);

cleanup:
    quill__strbuf_release(&body);
    quill__strbuf_release(&url);
    return status;
}

/* ---- Download ------------------------------------------------------------------------------ */

static bool starts_with_ignoring_case(const char *text, size_t n_bytes, const char *prefix) {
    size_t n_prefix = strlen(prefix);
    return n_bytes >= n_prefix && strncasecmp(text, prefix, n_prefix) == 0;
}

/* Parses the headers of each response (redirects included) for its status and sizes. */
static size_t on_header(char *data, size_t size, size_t n_items, void *context) {
    hub_download *download = context;
    size_t n_bytes = size * n_items;
    char line[256];
    size_t n_line = n_bytes < sizeof(line) - 1 ? n_bytes : sizeof(line) - 1;
    memcpy(line, data, n_line);
    line[n_line] = '\0';

    if (starts_with_ignoring_case(line, n_line, "HTTP/")) {
        download->http_status = 0;
        download->content_length = -1;
        download->range_start = -1;
        download->range_total = -1;
        const char *space = strchr(line, ' ');
        if (space != NULL) {
            download->http_status = strtol(space + 1, NULL, 10);
        }
    } else if (starts_with_ignoring_case(line, n_line, "content-length:")) {
        char *end = NULL;
        long long value = strtoll(line + 15, &end, 10);
        download->content_length = end != line + 15 && value >= 0 ? value : -1;
    } else if (starts_with_ignoring_case(line, n_line, "content-range:")) {
        /* "bytes START-END/TOTAL", or "bytes * /TOTAL" on a 416. */
        long long start = -1;
        long long end = -1;
        long long total = -1;
        if (sscanf(line + 14, " bytes %lld-%lld/%lld", &start, &end, &total) == 3) {
            download->range_start = start;
            download->range_total = total;
        } else if (sscanf(line + 14, " bytes */%lld", &total) == 1) {
            download->range_total = total;
        }
    }
    return n_bytes;
}

/* Positions .part for the body of the final response: resumed, or restarted on a 200. */
static bool start_body(hub_download *download) {
    download->is_body_started = true;
    if (download->http_status == 206 && download->range_start != download->resume_bytes) {
        download->is_restart_needed = true;
        return false;
    }
    if (download->http_status == 200 && download->resume_bytes > 0) {
        download->resume_bytes = 0;
        if (ftruncate(download->fd, 0) != 0) {
            download->write_errno = errno;
            return false;
        }
    }
    if (lseek(download->fd, (off_t)download->resume_bytes, SEEK_SET) < 0) {
        download->write_errno = errno;
        return false;
    }
    return true;
}

static size_t on_body(char *data, size_t size, size_t n_items, void *context) {
    hub_download *download = context;
    size_t n_bytes = size * n_items;
    if (download->http_status < 200 || download->http_status > 299) {
        if (download->error_body.length < HUB_MAX_ERROR_BODY_BYTES) {
            quill__strbuf_append(&download->error_body, data, n_bytes);
        }
        return n_bytes;
    }
    if (!download->is_body_started && !start_body(download)) {
        return 0;
    }
    size_t n_done = 0;
    while (n_done < n_bytes) {
        ssize_t n_written = write(download->fd, data + n_done, n_bytes - n_done);
        if (n_written < 0 && errno == EINTR) {
            continue;
        }
        if (n_written <= 0) {
            download->write_errno = n_written < 0 ? errno : EIO;
            return 0;
        }
        n_done += (size_t)n_written;
    }
    return n_bytes;
}

static int on_progress(void *context, curl_off_t total_bytes, curl_off_t done_bytes,
                       curl_off_t upload_total, curl_off_t upload_done) {
    hub_download *download = context;
    if (total_bytes <= 0 || download->http_status < 200 || download->http_status > 299) {
        return 0;
    }
    double total = (double)(download->resume_bytes + total_bytes);
    double done = (double)(download->resume_bytes + done_bytes);
    int percent = (int)(100.0 * done / total);
    if (percent != download->last_percent) {
        download->last_percent = percent;
        fprintf(stderr, "\r%s: %3d%% (%.1f / %.1f MiB)", download->display_name, percent,
                done / (1024.0 * 1024.0), total / (1024.0 * 1024.0));
        fflush(stderr);
    }
    return 0;
}

static quill_status part_size(const hub_download *download, int64_t *n_bytes) {
    struct stat info;
    if (fstat(download->fd, &info) != 0) {
        int saved_errno = errno;
        char reason[128];
        *n_bytes = 0;
        return quill_error_set(QUILL_ERR_IO, "hub: fstat of '%s' failed: %s", download->part_path,
                               strerror_r(saved_errno, reason, sizeof(reason)));
    }
    *n_bytes = (int64_t)info.st_size;
    return QUILL_OK;
}

/* Runs one GET of the file into .part, resuming from its current size. */
static quill_status run_transfer(hub_download *download) {
    char error_buffer[CURL_ERROR_SIZE] = {0};
    struct curl_slist *headers = NULL;
    CURL *curl = NULL;
    char range[32];
    quill_status status = make_headers(&headers);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    curl = make_handle(download->url, headers, error_buffer);
    if (curl == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: cannot create a curl handle for %s",
                                 download->url);
        goto cleanup;
    }
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, download);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, download);
    if (download->resume_bytes > 0) {
        snprintf(range, sizeof(range), "%lld-", (long long)download->resume_bytes);
        curl_easy_setopt(curl, CURLOPT_RANGE, range);
    }
    if (download->show_progress) {
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, download);
    }

    CURLcode code = curl_easy_perform(curl);
    if (download->show_progress && download->last_percent >= 0) {
        fputc('\n', stderr);
    }
    if (download->is_restart_needed) {
        goto cleanup;
    }
    if (download->write_errno != 0) {
        char reason[128];
        status = quill_error_set(QUILL_ERR_IO,
                                 "hub: writing '%s' failed: %s; free disk space or set "
                                 "QUILL_CACHE_DIR to another folder, then run again to resume",
                                 download->part_path,
                                 strerror_r(download->write_errno, reason, sizeof(reason)));
        goto cleanup;
    }
    if (code != CURLE_OK) {
        /* The resume hint is only true when .part contains bytes to resume from. */
        int64_t n_part_bytes = 0;
        (void)part_size(download, &n_part_bytes);
        status = network_error(download->url, code, error_buffer,
                               n_part_bytes > 0 ? "check the network connection and run again, "
                                                  "the download resumes where it stopped"
                                                : "check the network connection and run again");
        goto cleanup;
    }

cleanup:
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    return status;
}

/* Checks a finished transfer: the HTTP status and the size of .part against the announced
 * size. Sets *is_restart_needed when .part must be discarded and fetched from byte 0. */
static quill_status check_transfer(hub_download *download, bool *is_restart_needed) {
    *is_restart_needed = download->is_restart_needed;
    int64_t n_bytes = 0;
    quill_status status = part_size(download, &n_bytes);
    if (status != QUILL_OK || *is_restart_needed) {
        return status;
    }

    /* 416: the server cannot continue from .part, which may be complete already. */
    if (download->http_status == 416) {
        *is_restart_needed = download->range_total != n_bytes;
        return QUILL_OK;
    }
    if (download->http_status < 200 || download->http_status > 299) {
        return http_error(download->url, download->http_status, &download->error_body);
    }

    int64_t expected_bytes = -1;
    if (download->http_status == 206) {
        expected_bytes = download->range_total;
    } else if (download->content_length >= 0) {
        expected_bytes = download->content_length;
    }
    if (expected_bytes >= 0 && n_bytes != expected_bytes) {
        /* The bytes are unfit for a resume. The lock stays on the open descriptor. */
        (void)unlink(download->part_path);
        return quill_error_set(QUILL_ERR_UPSTREAM,
                               "hub: size mismatch for %s: received %lld bytes but the server "
                               "announced %lld; the partial file was discarded, run again to "
                               "download it from the start",
                               download->url, (long long)n_bytes, (long long)expected_bytes);
    }
    return QUILL_OK;
}

/* Opens and locks FILE.part. Returns QUILL_ERR_BUSY when another process holds the lock. */
static quill_status open_part(hub_download *download) {
    download->fd = open(download->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (download->fd < 0) {
        int saved_errno = errno;
        char reason[128];
        return quill_error_set(QUILL_ERR_IO,
                               "hub: cannot open '%s': %s; set QUILL_CACHE_DIR to a writable "
                               "folder",
                               download->part_path,
                               strerror_r(saved_errno, reason, sizeof(reason)));
    }
    if (flock(download->fd, LOCK_EX | LOCK_NB) != 0) {
        return quill_error_set(QUILL_ERR_BUSY,
                               "hub: '%s' is being downloaded by another process; wait for it to "
                               "finish and run again",
                               download->part_path);
    }
    download->is_locked = true;
    return QUILL_OK;
}

/* Downloads url into final_path through final_path.part. */
static quill_status download_file(const char *url, const char *final_path,
                                  const char *display_name) {
    hub_download download = {.url = url, .display_name = display_name, .fd = -1};
    quill__strbuf_init(&download.error_body);
    quill_strbuf part_path;
    quill__strbuf_init(&part_path);
    quill_status status = quill__strbuf_appendf(&part_path, "%s.part", final_path);
    if (status != QUILL_OK) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
        goto cleanup;
    }
    download.part_path = part_path.data;
    status = open_part(&download);
    if (status != QUILL_OK || is_regular_file(final_path)) {
        goto cleanup; /* a concurrent download finished while this one waited */
    }

    /* At most two transfers: a resumed one, then one from byte 0 if the server requires it. */
    for (int attempt = 0; attempt < 2; attempt++) {
        status = part_size(&download, &download.resume_bytes);
        if (status != QUILL_OK) {
            goto cleanup;
        }
        download.is_body_started = false;
        download.is_restart_needed = false;
        download.last_percent = -1;
        download.show_progress = isatty(STDERR_FILENO) != 0;
        quill__strbuf_clear(&download.error_body);
        status = run_transfer(&download);
        bool is_restart_needed = false;
        if (status == QUILL_OK) {
            status = check_transfer(&download, &is_restart_needed);
        }
        if (status != QUILL_OK || !is_restart_needed) {
            break;
        }
        if (ftruncate(download.fd, 0) != 0 || attempt == 1) {
            status = quill_error_set(QUILL_ERR_UPSTREAM,
                                     "hub: %s did not continue the partial download; delete '%s' "
                                     "and run again",
                                     url, download.part_path);
            goto cleanup;
        }
    }
    if (status != QUILL_OK) {
        goto cleanup;
    }

    /* Complete: make it durable, then move it into place atomically. */
    if (fsync(download.fd) != 0 || rename(download.part_path, final_path) != 0) {
        int saved_errno = errno;
        char reason[128];
        status = quill_error_set(QUILL_ERR_IO, "hub: cannot move '%s' to '%s': %s; free disk "
                                 "space and run again",
                                 download.part_path, final_path,
                                 strerror_r(saved_errno, reason, sizeof(reason)));
    }

cleanup:
    /* An empty .part has nothing to resume, so a failed download leaves no trace of it. It is
     * removed only while this process holds the lock, never another process's file. */
    if (status != QUILL_OK && download.is_locked) {
        int64_t n_part_bytes = -1;
        if (part_size(&download, &n_part_bytes) == QUILL_OK && n_part_bytes == 0) {
            (void)unlink(download.part_path);
        }
    }
    if (download.fd >= 0) {
        close(download.fd);
    }
    quill__strbuf_release(&download.error_body);
    quill__strbuf_release(&part_path);
    return status;
}

/* ---- Entry point --------------------------------------------------------------------------- */

/* Returns the base URL without trailing slashes as a new string. */
static char *make_base_url(void) {
    const char *base = getenv("QUILL_HF_BASE_URL");
    if (base == NULL || base[0] == '\0') {
        base = hub_default_base_url;
    }
    size_t length = strlen(base);
    while (length > 0 && base[length - 1] == '/') {
        length--;
    }
    return quill__strndup(base, length);
}

/* Reads the FILE that an earlier reference without FILE chose from the listing. Leaves
 * reference->file empty when nothing valid is recorded. */
static void read_choice(const char *dir_path, hub_reference *reference) {
    quill_strbuf path;
    quill__strbuf_init(&path);
    quill__strbuf_appendf(&path, "%s/%s", dir_path, hub_choice_name);
    FILE *file = path.is_failed ? NULL : fopen(path.data, "r");
    quill__strbuf_release(&path);
    if (file == NULL) {
        return;
    }
    char line[HUB_MAX_FILE_BYTES + 2];
    if (fgets(line, sizeof(line), file) != NULL) {
        size_t length = strcspn(line, "\n");
        line[length] = '\0';
        if (length <= HUB_MAX_FILE_BYTES && has_gguf_suffix(line) && is_valid_file(line, length)) {
            memcpy(reference->file, line, length + 1);
        }
    }
    fclose(file);
}

/* Records the FILE chosen from the listing, written aside and renamed into place. A failure
 * only costs a listing request next time, so it is only logged. */
static void write_choice(const char *dir_path, const char *file_name) {
    quill_strbuf path;
    quill_strbuf temporary;
    quill__strbuf_init(&path);
    quill__strbuf_init(&temporary);
    quill__strbuf_appendf(&path, "%s/%s", dir_path, hub_choice_name);
    quill__strbuf_appendf(&temporary, "%s/%s.%ld", dir_path, hub_choice_name, (long)getpid());
    bool is_written = false;
    if (!path.is_failed && !temporary.is_failed) {
        FILE *file = fopen(temporary.data, "w");
        if (file != NULL) {
            bool is_complete = fprintf(file, "%s\n", file_name) > 0;
            is_complete = fclose(file) == 0 && is_complete;
            is_written = is_complete && rename(temporary.data, path.data) == 0;
            if (!is_written) {
                unlink(temporary.data);
            }
        }
    }
    if (!is_written) {
        QUILL_LOG_WARN("hub", "could not record the chosen file", "dir=%s file=%s errno=%d",
                       dir_path, file_name, errno);
    }
    quill__strbuf_release(&temporary);
    quill__strbuf_release(&path);
}

/* Fills in FILE when the reference has none: the choice an earlier listing recorded, else the
 * listing's choice (then is_listed is true), else a cached file when the listing is unreachable. */
static quill_status choose_file(const char *base_url, const char *dir_path,
                                hub_reference *reference, bool *is_listed) {
    *is_listed = false;
    if (reference->file[0] != '\0') {
        return QUILL_OK;
    }
    read_choice(dir_path, reference);
    if (reference->file[0] != '\0') {
        return QUILL_OK;
    }
    quill_status status = choose_remote_file(base_url, reference);
    if (status == QUILL_OK) {
        *is_listed = true;
        return QUILL_OK;
    }
    if (status != QUILL_ERR_IO) {
        return status;
    }

    char listing_error[512];
    snprintf(listing_error, sizeof(listing_error), "%s", quill_error_message());
    quill_status cache_status = pick_cached_file(dir_path, reference);
    if (cache_status != QUILL_OK) {
        return cache_status;
    }
    if (reference->file[0] == '\0') {
        return quill_error_set(status, "%s", listing_error);
    }
    QUILL_LOG_WARN("hub", "repository listing unreachable, using a cached file",
                   "repo=%s/%s file=%s error=\"%s\"", reference->owner, reference->repo,
                   reference->file, listing_error);
    return QUILL_OK;
}

quill_status quill_hub_resolve(const char *reference_text, char **path_out) {
    *path_out = NULL;
    hub_reference reference;
    char *base_url = NULL;
    char *dir_path = NULL;
    quill_strbuf final_path;
    quill_strbuf url;
    quill__strbuf_init(&final_path);
    quill__strbuf_init(&url);
    quill_status status = parse_reference(reference_text, &reference);
    if (status == QUILL_OK) {
        status = repo_dir(&reference, &dir_path);
    }
    if (status != QUILL_OK) {
        goto cleanup;
    }
    base_url = make_base_url();
    if (base_url == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
        goto cleanup;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        status = quill_error_set(QUILL_ERR_IO, "hub: curl_global_init failed: %s",
                                 curl_easy_strerror(curl_init_result));
        goto cleanup;
    }

    bool is_listed = false;
    status = choose_file(base_url, dir_path, &reference, &is_listed);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    quill__strbuf_appendf(&final_path, "%s/%s", dir_path, reference.file);
    quill__strbuf_appendf(&url, "%s/%s/%s/resolve/main/%s", base_url, reference.owner,
                          reference.repo, reference.file);
    if (final_path.is_failed || url.is_failed) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
        goto cleanup;
    }

    /* A file at its final path is complete (downloads are renamed into place), so it is used
     * without any request. */
    if (!is_regular_file(final_path.data)) {
        size_t n_existing_bytes = 0;
        status = make_parent_dirs(final_path.data, &n_existing_bytes);
        if (status == QUILL_OK) {
            status = download_file(url.data, final_path.data, reference.file);
        }
        if (status != QUILL_OK) {
            remove_created_dirs(final_path.data, n_existing_bytes);
            goto cleanup;
        }
    }
    if (is_listed) {
        write_choice(dir_path, reference.file);
    }
    *path_out = quill__strbuf_take(&final_path);
    if (*path_out == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "hub: out of memory");
    }

cleanup:
    quill__strbuf_release(&url);
    quill__strbuf_release(&final_path);
    quill__free(dir_path);
    quill__free(base_url);
    return status;
}

void quill_hub_path_free(char *path) {
    quill__free(path);
}
