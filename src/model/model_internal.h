/*
 * The model's definition, shared by the loader (model.c) and the forward pass (context.c).
 * Weights point into the GGUF mapping; nothing here is copied or written after load.
 */
#ifndef QUILL_MODEL_INTERNAL_H
#define QUILL_MODEL_INTERNAL_H

#include "kernels/kernels.h"
#include "model/arch.h"
#include "quill/gguf.h"
#include "quill/model.h"
#include "quill/tokenizer.h"

/* One transformer block. Matrices are [n_rows = outputs][n_cols = inputs]; vectors are f32. */
typedef struct quill_layer_weights {
    const float *attn_norm;   /* [n_embd] */
    quill_matrix attn_q;      /* [n_heads * head_dim][n_embd] */
    quill_matrix attn_k;      /* [n_kv_heads * head_dim][n_embd] */
    quill_matrix attn_v;      /* [n_kv_heads * head_dim][n_embd] */
    quill_matrix attn_output; /* [n_embd][n_heads * head_dim] */
    const float *q_bias;      /* [n_heads * head_dim], qwen2 only, else NULL */
    const float *k_bias;      /* [n_kv_heads * head_dim], qwen2 only, else NULL */
    const float *v_bias;      /* [n_kv_heads * head_dim], qwen2 only, else NULL */
    const float *q_norm;      /* [head_dim], qwen3 only, else NULL */
    const float *k_norm;      /* [head_dim], qwen3 only, else NULL */
    const float *ffn_norm;    /* [n_embd] */
    quill_matrix ffn_gate;    /* [n_ff][n_embd] */
    quill_matrix ffn_up;      /* [n_ff][n_embd] */
    quill_matrix ffn_down;    /* [n_embd][n_ff] */
} quill_layer_weights;

struct quill_model {
    quill_gguf *file;                /* owned mapping that the weights point into */
    quill_tokenizer *tokenizer;      /* owned */
    const quill_arch_traits *traits; /* architecture differences */
    quill_model_info info;           /* hyper-parameters; its strings point at the fields below */
    char *arch_name;                 /* owned copy of general.architecture */
    char *name;                      /* owned copy of general.name or the file's base name */
    char *chat_template;             /* owned copy of tokenizer.chat_template, or NULL */
    quill_matrix token_embd;         /* [n_vocab][n_embd] */
    quill_matrix output;             /* [n_vocab][n_embd]; token_embd when tied */
    const float *output_norm;        /* [n_embd] */
    const float *rope_freqs;         /* [n_rot / 2] frequency divisors, or NULL */
    quill_layer_weights *layers;     /* [n_layers] */
    uint8_t *arena_mapping;          /* owned anonymous mapping holding the streamed matrices */
    size_t arena_mapping_bytes;      /* its length, for munmap */
    uint8_t *arena;                  /* 2 MiB-aligned start of the matrices inside it */
    size_t arena_bytes;              /* bytes of matrices from arena on */
};

/* Returns the context's compute pool, for callers that run their own parallel work between
 * forward passes on the thread that drives the context (never during a pass). May be NULL:
 * quill__threadpool_run then runs the task on the calling thread. */
quill_threadpool *quill__context_pool(const quill_context *context);

/* Sets the smallest op, in bytes read, multiply-adds or elements, that a forward pass runs on
 * the context's pool; 0 sends every op to the pool. Lets tests cover the pool's paths on tiny
 * models, whose ops the default thresholds keep on the calling thread. */
void quill__context_set_parallel_min(quill_context *context, int64_t n_min);

#endif
