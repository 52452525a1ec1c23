/*
 * Tiny synthetic models for tests: writes a GGUF file with random weights for the llama, qwen2
 * or qwen3 architecture in any tensor type the kernels can quantize to, with a small
 * SentencePiece-style vocabulary. Deterministic for a given seed. Knobs leave out or misshape
 * one tensor or leave out one metadata key, so that loader errors can be tested.
 */
#ifndef QUILL_TEST_TINY_MODEL_H
#define QUILL_TEST_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "quill/model.h"

/* Vocabulary written: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), 3..258 byte tokens <0x00>..<0xFF>,
 * then "▁a", "a", "▁b", "b", ... "▁z", "z", then two-letter pieces "▁aa", "aa", "▁ab", ...
 * until n_vocab ids. Scores fall with the id (-id), so earlier pieces merge first. */
enum { QUILL_TEST_TINY_FIRST_PIECE = 259 };

typedef struct quill_test_tiny_model_params {
    const char *arch;            /* general.architecture: "llama", "qwen2", "qwen3", or any
                                    other name (written as given, for unsupported-arch tests) */
    uint32_t type;               /* quill_type of every 2-D weight (F32, F16, BF16, Q8_0, ...);
                                    norms, biases and rope_freqs are always F32 */
    int32_t n_layers;            /* blocks */
    int32_t n_embd;              /* residual width; a multiple of the type's block size */
    int32_t n_heads;             /* query heads */
    int32_t n_kv_heads;          /* key/value heads; divides n_heads */
    int32_t head_dim;            /* 0: n_embd / n_heads and no key_length key is written */
    int32_t n_ff;                /* feed-forward width; a multiple of the type's block size */
    int32_t n_vocab;             /* at least QUILL_TEST_TINY_FIRST_PIECE */
    int32_t n_ctx;               /* <arch>.context_length */
    float rope_freq_base;        /* <arch>.rope.freq_base */
    float rms_eps;               /* <arch>.attention.layer_norm_rms_epsilon */
    bool has_output;             /* write output.weight; false ties the output to token_embd */
    bool has_rope_freqs;         /* write rope_freqs.weight (Llama 3 frequency factors) */
    const char *chat_template;   /* tokenizer.chat_template, or NULL for none */
    uint64_t seed;               /* weights are a function of the seed and the tensor name */
    const char *omit_tensor;     /* a tensor to leave out, or NULL */
    const char *misshape_tensor; /* a tensor written with its outer dimension one larger, or
                                    NULL */
    const char *omit_key;        /* a metadata key to leave out, or NULL */
} quill_test_tiny_model_params;

/* Defaults: llama, F32, 2 layers, n_embd 64, 4 heads, 2 KV heads, n_ff 128, 320 tokens,
 * context 256, freq_base 10000, eps 1e-5, untied output, no chat template, seed 1. */
quill_test_tiny_model_params quill_test_tiny_model_params_default(void);

/* Writes the model to path. Returns 0 on success; otherwise a quill_status (negative) whose
 * message quill_error_message() holds. */
int quill_test_write_tiny_model(const char *path, const quill_test_tiny_model_params *params);

/* Writes the model to the scratch file name and loads it with default load parameters. On
 * success returns 0 with the new path in *path (free it) and the model in *model; on failure
 * prints why and returns -1. */
int quill_test_load_tiny_model(const char *name, const quill_test_tiny_model_params *params,
                               char **path, quill_model **model);

#endif
