/*
 * Clock readings. No state.
 */
#include "base/clock.h"

#include <stdio.h>
#include <time.h>

int64_t quill__clock_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

int64_t quill__clock_monotonic_us(void) {
    return quill__clock_monotonic_ns() / 1000;
}

int64_t quill__clock_unix_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec;
}

char *quill__clock_utc_iso8601(char *buffer, size_t buffer_bytes) {
    struct timespec now;
    struct tm utc;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);
    snprintf(buffer, buffer_bytes, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", utc.tm_year + 1900,
             utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
             now.tv_nsec / 1000000L);
    return buffer;
}
