/*
 * Export and linkage macros shared by every public header. libquill is a static library today;
 * a shared build exports only QUILL_API symbols (built with -fvisibility=hidden).
 */
#ifndef QUILL_API_H
#define QUILL_API_H

#if defined(__GNUC__)
#define QUILL_API __attribute__((visibility("default")))
#else
#define QUILL_API
#endif

#ifdef __cplusplus
#define QUILL_EXTERN_C_BEGIN extern "C" {
#define QUILL_EXTERN_C_END }
#else
#define QUILL_EXTERN_C_BEGIN
#define QUILL_EXTERN_C_END
#endif

#endif
