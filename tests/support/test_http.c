/*
 * libcurl and socket helpers shared by the server test programs. Single-threaded use.
 */
#include "test_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "test_support.h"

static size_t collect_body(char *data, size_t size, size_t count, void *user_data) {
    quill_test_http_reply *reply = user_data;
    size_t n_bytes = size * count;
    char *grown = realloc(reply->body, reply->n_body_bytes + n_bytes + 1);
    if (grown == NULL) {
        return 0;
    }
    memcpy(grown + reply->n_body_bytes, data, n_bytes);
    reply->n_body_bytes += n_bytes;
    grown[reply->n_body_bytes] = '\0';
    reply->body = grown;
    return n_bytes;
}

static size_t collect_header(char *data, size_t size, size_t count, void *user_data) {
    quill_test_http_reply *reply = user_data;
    size_t n_bytes = size * count;
    char line[256];
    size_t n_line = n_bytes < sizeof(line) - 1 ? n_bytes : sizeof(line) - 1;
    memcpy(line, data, n_line);
    line[n_line] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (strncasecmp(line, "Retry-After: ", 13) == 0) {
        snprintf(reply->retry_after, sizeof(reply->retry_after), "%.31s", line + 13);
    }
    if (strncasecmp(line, "Allow: ", 7) == 0) {
        snprintf(reply->allow, sizeof(reply->allow), "%.63s", line + 7);
    }
    if (strncasecmp(line, "Content-Type: ", 14) == 0) {
        snprintf(reply->content_type, sizeof(reply->content_type), "%.95s", line + 14);
    }
    return n_bytes;
}

void quill_test_http_send(uint16_t port, const char *method, const char *path,
                          const char *content_type, const char *api_key, const char *body,
                          size_t n_body_bytes, quill_test_http_reply *reply) {
    memset(reply, 0, sizeof(*reply));
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", (unsigned)port, path);
    struct curl_slist *headers = NULL;
    char header[256];
    if (content_type != NULL) {
        snprintf(header, sizeof(header), "Content-Type: %s", content_type);
    } else {
        snprintf(header, sizeof(header), "Content-Type:");
    }
    headers = curl_slist_append(headers, header);
    if (api_key != NULL) {
        snprintf(header, sizeof(header), "Authorization: Bearer %s", api_key);
        headers = curl_slist_append(headers, header);
    }
    headers = curl_slist_append(headers, "Expect:");

    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)n_body_bytes);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, reply);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    CURLcode code = curl_easy_perform(curl);
    assert_int_equal(code, CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
    if (reply->body == NULL) {
        reply->body = calloc(1, 1);
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
}

void quill_test_http_reply_release(quill_test_http_reply *reply) {
    free(reply->body);
    memset(reply, 0, sizeof(*reply));
}

void quill_test_loopback_connect(int fd, uint16_t port) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
}
