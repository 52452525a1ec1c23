/*
 * Time: durations come from the monotonic clock, timestamps from the UTC wall clock.
 * Safe from any thread.
 */
#ifndef QUILL_CLOCK_H
#define QUILL_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Returns microseconds on CLOCK_MONOTONIC; only differences are meaningful. */
int64_t quill__clock_monotonic_us(void);

/* Returns nanoseconds on CLOCK_MONOTONIC. */
int64_t quill__clock_monotonic_ns(void);

/* Returns seconds since the Unix epoch, UTC. */
int64_t quill__clock_unix_seconds(void);

/* Writes the current UTC time as ISO 8601 with milliseconds ("2026-12-04T21:30:00.123Z") into
 * buffer of buffer_bytes bytes (at least 25). Returns buffer. */
char *quill__clock_utc_iso8601(char *buffer, size_t buffer_bytes);

#endif
