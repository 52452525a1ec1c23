/*
 * Strict number parsing for flags: the whole text must be a number in range.
 */
#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "quill/status.h"

const char *quill_cli_take_value(const char *command, int argc, char **argv, int *index) {
    if (*index + 1 >= argc) {
        fprintf(stderr, "quill %s: %s needs a value; see 'quill %s --help'\n", command,
                argv[*index], command);
        return NULL;
    }
    *index += 1;
    return argv[*index];
}

bool quill_cli_parse_int64(const char *command, const char *flag, const char *text, int64_t min,
                           int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "quill %s: invalid value '%s' for %s; expected an integer from %lld to %lld\n",
                command, text, flag, (long long)min, (long long)max);
        return false;
    }
    *out = (int64_t)value;
    return true;
}

bool quill_cli_parse_int(const char *command, const char *flag, const char *text, int min, int max,
                         int *out) {
    int64_t value = 0;
    if (!quill_cli_parse_int64(command, flag, text, min, max, &value)) {
        return false;
    }
    *out = (int)value;
    return true;
}

bool quill_cli_parse_uint64(const char *command, const char *flag, const char *text,
                            uint64_t *out) {
    char *end = NULL;
    errno = 0;
    if (text[0] == '-') {
        fprintf(stderr, "quill %s: invalid value '%s' for %s; expected a non-negative integer\n",
                command, text, flag);
        return false;
    }
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        fprintf(stderr, "quill %s: invalid value '%s' for %s; expected a non-negative integer\n",
                command, text, flag);
        return false;
    }
    *out = (uint64_t)value;
    return true;
}

bool quill_cli_parse_double(const char *command, const char *flag, const char *text, double min,
                            double max, double *out) {
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(value) || value < min ||
        value > max) {
        fprintf(stderr, "quill %s: invalid value '%s' for %s; expected a number from %g to %g\n",
                command, text, flag, min, max);
        return false;
    }
    *out = value;
    return true;
}

void quill_cli_unknown_option(const char *command, const char *arg) {
    fprintf(stderr, "quill %s: unknown option '%s'; see 'quill %s --help'\n", command, arg,
            command);
}

void quill_cli_report_error(const char *command, const char *message) {
    const char *detail = quill_error_message();
    if (detail[0] != '\0') {
        fprintf(stderr, "quill %s: %s: %s\n", command, message, detail);
    } else {
        fprintf(stderr, "quill %s: %s\n", command, message);
    }
}
