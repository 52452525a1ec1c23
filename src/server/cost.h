/*
 * Money for the API's usage reports. Prices are configured in USD per million tokens and held as
 * exact int64 counts of picodollars (1e-12 USD) per token: $0.15 per million tokens is 150000
 * picodollars per token. Amounts are sums of token counts times those prices, checked for
 * overflow, and are printed as decimal USD from the integer, so no float ever touches money.
 * Stateless: safe from any thread.
 */
#ifndef QUILL_SERVER_COST_H
#define QUILL_SERVER_COST_H

#include <stddef.h>
#include <stdint.h>

#include "quill/status.h"

/* The largest price accepted, in picodollars per token: $1,000,000 per million tokens. */
#define QUILL_COST_MAX_PRICE_PICOUSD ((int64_t)1000000 * 1000000)

/* Prices of one model, in picodollars per token. */
typedef struct quill_prices {
    int64_t input_picousd;        /* per prompt token not served from the prefix cache */
    int64_t cached_input_picousd; /* per prompt token served from the prefix cache */
    int64_t output_picousd;       /* per completion token */
} quill_prices;

/* The cost of one request, in picodollars. total_picousd is the sum of the three parts. */
typedef struct quill_cost {
    int64_t input_picousd;
    int64_t cached_input_picousd;
    int64_t output_picousd;
    int64_t total_picousd;
} quill_cost;

/* Parses a price in USD per million tokens written as decimal text ("0.15", "2", "0.000125")
 * into picodollars per token, exactly. At most 6 decimal places are accepted, because one
 * picodollar per token is 0.000001 USD per million tokens. A sign, an exponent, an empty
 * string or a price above QUILL_COST_MAX_PRICE_PICOUSD fails with QUILL_ERR_INVALID_ARG. */
quill_status quill__cost_parse_price(const char *text, int64_t *price_picousd);

/* Computes (n_prompt - n_cached) x input + n_cached x cached_input + n_completion x output.
 * Counts must be non-negative with n_cached <= n_prompt. An overflow of int64 fails with
 * QUILL_ERR_INVALID_ARG. */
quill_status quill__cost_compute(const quill_prices *prices, int64_t n_prompt_tokens,
                                 int64_t n_cached_tokens, int64_t n_completion_tokens,
                                 quill_cost *out);

/* Writes amount_picousd as decimal USD with up to 12 decimal places and trailing zeros
 * trimmed ("0", "0.00015", "-1.5", "12.000000000001") into buffer of buffer_bytes bytes (at
 * least QUILL_COST_USD_TEXT_BYTES). Returns buffer. */
#define QUILL_COST_USD_TEXT_BYTES 40
char *quill__cost_format_usd(int64_t amount_picousd, char *buffer, size_t buffer_bytes);

#endif
