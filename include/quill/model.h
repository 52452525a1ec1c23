/*
 * Models: a GGUF file mapped read-only, its hyper-parameters, its weights (used in place from the
 * mapping) and its tokenizer; and the context that runs forward passes over a batch of tokens
 * that may belong to several sequences, reading and writing K/V in a paged quill_kv_cache.
 *
 * A quill_model is immutable after load: safe from any thread. A quill_context (scratch buffers
 * and the compute thread pool) is driven by one thread at a time.
 */
#ifndef QUILL_MODEL_H
#define QUILL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/gguf.h"
#include "quill/kv_cache.h"
#include "quill/status.h"
#include "quill/tokenizer.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_model quill_model;
typedef struct quill_context quill_context;

typedef enum quill_arch {
    QUILL_ARCH_LLAMA = 1, /* Llama 2/3, TinyLlama, SmolLM, Mistral */
    QUILL_ARCH_QWEN2 = 2, /* Llama with Q/K/V biases */
    QUILL_ARCH_QWEN3 = 3, /* Llama with per-head RMSNorm on Q and K */
} quill_arch;

typedef enum quill_rope_layout {
    QUILL_ROPE_NORMAL = 0, /* rotate adjacent pairs (x[2i], x[2i+1]): llama */
    QUILL_ROPE_NEOX = 2,   /* rotate halves (x[i], x[i + n_rot/2]): qwen2, qwen3 */
} quill_rope_layout;

/* Hyper-parameters and sizes. Borrowed from the model: valid until destroy. */
typedef struct quill_model_info {
    quill_arch arch;            /* architecture */
    const char *arch_name;      /* general.architecture, e.g. "llama" */
    const char *name;           /* general.name, or the file's base name */
    int32_t n_layers;           /* transformer blocks */
    int32_t n_embd;             /* residual width */
    int32_t n_heads;            /* query heads */
    int32_t n_kv_heads;         /* key/value heads (grouped-query attention) */
    int32_t head_dim;           /* elements per head */
    int32_t n_ff;               /* feed-forward width */
    int32_t n_vocab;            /* logits per token */
    int32_t n_rot;              /* rotated elements per head */
    int64_t n_ctx_train;        /* trained context length, in tokens */
    float rope_freq_base;       /* RoPE theta */
    float rms_eps;              /* RMSNorm epsilon */
    quill_rope_layout rope_layout;
    bool has_rope_freqs;        /* Llama 3 rope_freqs factors present */
    bool has_tied_output;       /* output projection reuses token_embd */
    bool has_chat_template;     /* tokenizer.chat_template present */
    int64_t n_params;           /* total weight elements */
    size_t n_weight_bytes;      /* bytes of all tensors */
    size_t n_decode_bytes;      /* weight bytes one decode step reads: every tensor once, but
                                 * one row of an untied token embedding */
    size_t n_file_bytes;        /* bytes of the file */
} quill_model_info;

typedef struct quill_model_params {
    bool use_mlock;  /* lock the mapping in memory */
} quill_model_params;

QUILL_API quill_model_params quill_model_params_default(void);

/* Loads a model: maps the file, checks every tensor the architecture needs (name, type, shape)
 * and loads the tokenizer. Returns a new model in *out; the caller destroys it. An architecture
 * other than llama, qwen2 and qwen3 fails with QUILL_ERR_UNSUPPORTED naming the supported ones. */
QUILL_API quill_status quill_model_load(const char *path, const quill_model_params *params,
                                        quill_model **out);
QUILL_API void quill_model_destroy(quill_model *model);

QUILL_API const quill_model_info *quill_model_get_info(const quill_model *model);
/* Borrowed: valid until the model is destroyed. */
QUILL_API const quill_tokenizer *quill_model_tokenizer(const quill_model *model);
QUILL_API const quill_gguf *quill_model_gguf(const quill_model *model);
/* tokenizer.chat_template as a NUL-terminated copy, or NULL when absent. Borrowed. */
QUILL_API const char *quill_model_chat_template(const quill_model *model);

/* A batch: n_tokens entries of (token, position, sequence id, logits wanted). Embed it and call
 * init/release; one thread at a time. */
typedef struct quill_batch {
    int32_t n_tokens;     /* entries in use */
    int32_t capacity;     /* entries allocated */
    int32_t *tokens;      /* [capacity] token ids */
    int32_t *positions;   /* [capacity] position within its sequence */
    int32_t *seq_ids;     /* [capacity] sequence id in the KV cache */
    bool *wants_logits;   /* [capacity] compute logits for this entry */
} quill_batch;

QUILL_API quill_status quill_batch_init(quill_batch *batch, int32_t capacity);
QUILL_API void quill_batch_release(quill_batch *batch);
QUILL_API void quill_batch_clear(quill_batch *batch);
/* Appends an entry; QUILL_ERR_INVALID_ARG when the batch is full. */
QUILL_API quill_status quill_batch_add(quill_batch *batch, int32_t token, int32_t position,
                                       int32_t seq_id, bool wants_logits);

typedef struct quill_context_params {
    int n_threads;          /* compute threads, including the driving thread */
    int32_t n_batch_max;    /* most entries one forward pass takes */
    bool use_pinning;       /* pin compute threads to CPUs */
} quill_context_params;

QUILL_API quill_context_params quill_context_params_default(void);

/* Creates a context: scratch buffers for n_batch_max tokens and a thread pool. Borrows model,
 * which must outlive the context. Returns a new context in *out; the caller destroys it. */
QUILL_API quill_status quill_context_create(const quill_model *model,
                                            const quill_context_params *params,
                                            quill_context **out);
QUILL_API void quill_context_destroy(quill_context *context);

/* Runs one forward pass over batch. For each sequence, its entries must have consecutive
 * positions that continue the sequence's K/V length in cache, and the cache must already hold
 * blocks for them (quill_kv_cache_seq_prepare). K/V of every entry is written; the sequence
 * lengths advance. Logits are computed only for entries with wants_logits.
 * Batch-invariant: an entry's logits and K/V do not depend on the batch's other entries. */
QUILL_API quill_status quill_context_forward(quill_context *context, quill_kv_cache *cache,
                                             const quill_batch *batch);

/* Logits of batch entry `index` of the last forward pass: f32 [n_vocab]. NULL when that entry
 * did not want logits. Borrowed: valid until the next forward pass. */
QUILL_API const float *quill_context_logits(const quill_context *context, int32_t index);

QUILL_EXTERN_C_END

#endif
