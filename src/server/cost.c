/*
 * Exact money arithmetic in int64 picodollars. cost.h describes the units.
 */
#include "server/cost.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Picodollars per token for each USD per million tokens: 1e12 / 1e6. */
#define PICOUSD_PER_TOKEN_PER_USD_PER_MILLION ((int64_t)1000000)

/* Decimal places of a price that still map to whole picodollars per token. */
#define PRICE_MAX_DECIMAL_PLACES 6

quill_status quill__cost_parse_price(const char *text, int64_t *price_picousd) {
    *price_picousd = 0;
    if (text == NULL || text[0] == '\0') {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "cost: price is empty; give USD per million tokens, e.g. 0.15");
    }

    /* Integer part, then an optional fraction of at most 6 significant places. */
    int64_t whole_usd = 0;
    int64_t fraction_picousd = 0;
    int64_t place_value = PICOUSD_PER_TOKEN_PER_USD_PER_MILLION;
    bool has_digits = false;
    bool is_fraction = false;
    for (const char *cursor = text; *cursor != '\0'; cursor++) {
        char c = *cursor;
        if (c == '.' && !is_fraction) {
            is_fraction = true;
            continue;
        }
        if (c < '0' || c > '9') {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "cost: price '%s' is not a plain decimal number of USD per "
                                   "million tokens; write it like 0.15 (no sign or exponent)",
                                   text);
        }
        has_digits = true;
        int digit = c - '0';
        if (!is_fraction) {
            if (__builtin_mul_overflow(whole_usd, 10, &whole_usd) ||
                __builtin_add_overflow(whole_usd, digit, &whole_usd)) {
                whole_usd = INT64_MAX;
            }
            continue;
        }
        place_value /= 10;
        if (place_value == 0) {
            if (digit != 0) {
                return quill_error_set(QUILL_ERR_INVALID_ARG,
                                       "cost: price '%s' has more than %d decimal places; prices "
                                       "are exact to 0.000001 USD per million tokens (one "
                                       "picodollar per token)",
                                       text, PRICE_MAX_DECIMAL_PLACES);
            }
            continue;
        }
        fraction_picousd += digit * place_value;
    }
    if (!has_digits) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "cost: price '%s' has no digits; give USD per million tokens, "
                               "e.g. 0.15",
                               text);
    }

    /* The bound on whole_usd comes first, so the product below cannot overflow. */
    int64_t max_whole_usd = QUILL_COST_MAX_PRICE_PICOUSD / PICOUSD_PER_TOKEN_PER_USD_PER_MILLION;
    int64_t price = whole_usd <= max_whole_usd
                        ? whole_usd * PICOUSD_PER_TOKEN_PER_USD_PER_MILLION + fraction_picousd
                        : INT64_MAX;
    if (price > QUILL_COST_MAX_PRICE_PICOUSD) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "cost: price '%s' USD per million tokens is above the maximum of "
                               "%lld",
                               text, (long long)max_whole_usd);
    }
    *price_picousd = price;
    return QUILL_OK;
}

/* Adds count x price to *sum. Returns false on overflow. */
static bool add_product(int64_t count, int64_t price, int64_t *part, int64_t *sum) {
    if (__builtin_mul_overflow(count, price, part)) {
        return false;
    }
    return !__builtin_add_overflow(*sum, *part, sum);
}

quill_status quill__cost_compute(const quill_prices *prices, int64_t n_prompt_tokens,
                                 int64_t n_cached_tokens, int64_t n_completion_tokens,
                                 quill_cost *out) {
    memset(out, 0, sizeof(*out));
    if (n_prompt_tokens < 0 || n_cached_tokens < 0 || n_completion_tokens < 0 ||
        n_cached_tokens > n_prompt_tokens) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "cost: token counts prompt=%lld cached=%lld completion=%lld are "
                               "inconsistent; counts must be non-negative and cached <= prompt",
                               (long long)n_prompt_tokens, (long long)n_cached_tokens,
                               (long long)n_completion_tokens);
    }

    quill_cost cost = {0};
    int64_t total = 0;
    bool is_ok = add_product(n_prompt_tokens - n_cached_tokens, prices->input_picousd,
                             &cost.input_picousd, &total) &&
                 add_product(n_cached_tokens, prices->cached_input_picousd,
                             &cost.cached_input_picousd, &total) &&
                 add_product(n_completion_tokens, prices->output_picousd, &cost.output_picousd,
                             &total);
    if (!is_ok) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "cost: the cost of prompt=%lld completion=%lld tokens overflows "
                               "int64 picodollars; lower the configured prices",
                               (long long)n_prompt_tokens, (long long)n_completion_tokens);
    }
    cost.total_picousd = total;
    *out = cost;
    return QUILL_OK;
}

char *quill__cost_format_usd(int64_t amount_picousd, char *buffer, size_t buffer_bytes) {
    /* Split into whole dollars and 12 decimal places without negating INT64_MIN. */
    const int64_t picousd_per_usd = 1000000000000LL;
    bool is_negative = amount_picousd < 0;
    uint64_t magnitude = is_negative ? (uint64_t)0 - (uint64_t)amount_picousd
                                     : (uint64_t)amount_picousd;
    uint64_t whole = magnitude / (uint64_t)picousd_per_usd;
    uint64_t fraction = magnitude % (uint64_t)picousd_per_usd;

    char fraction_text[16];
    snprintf(fraction_text, sizeof(fraction_text), "%012llu", (unsigned long long)fraction);
    size_t n_fraction = strlen(fraction_text);
    while (n_fraction > 0 && fraction_text[n_fraction - 1] == '0') {
        n_fraction--;
    }
    fraction_text[n_fraction] = '\0';

    snprintf(buffer, buffer_bytes, "%s%llu%s%s", is_negative ? "-" : "",
             (unsigned long long)whole, n_fraction > 0 ? "." : "", fraction_text);
    return buffer;
}
