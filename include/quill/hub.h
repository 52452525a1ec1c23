/*
 * Hugging Face Hub downloads: resolves a reference `OWNER/REPO[:FILE]` to a local GGUF file,
 * downloading it into the cache on first use and reading it from the cache afterwards without
 * any network request.
 *
 * The download URL is `<base>/OWNER/REPO/resolve/main/FILE`, where base is the environment
 * variable QUILL_HF_BASE_URL or https://huggingface.co. Without FILE, a .gguf file already in
 * the repository's cache folder is used; otherwise the repository listing
 * `<base>/api/models/OWNER/REPO` chooses one. Both prefer a name containing Q4_K_M, else take
 * the first (in name order for the cache, in listing order for the listing). The cache folder is $QUILL_CACHE_DIR, else $XDG_CACHE_HOME/quill, else
 * $HOME/.cache/quill, and a file is stored at `<cache>/hub/OWNER/REPO/FILE`. Downloads go to
 * FILE.part, resume from it with an HTTP Range request, are checked against the size the server
 * announced and are renamed into place when complete. HF_TOKEN, when set, is sent as a bearer
 * token. A progress bar is drawn on stderr only when stderr is a terminal.
 *
 * Safe from any thread; concurrent downloads of the same file fail fast with QUILL_ERR_BUSY.
 */
#ifndef QUILL_HUB_H
#define QUILL_HUB_H

#include <stdbool.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

/* Returns true when text has the shape of a hub reference (OWNER/REPO or OWNER/REPO:FILE with
 * the allowed characters), so a CLI can tell `-hf` values from local paths. */
QUILL_API bool quill_hub_is_reference(const char *text);

/* Checks that text is a well-formed reference, without any file or network access. Returns
 * QUILL_OK, or QUILL_ERR_INVALID_ARG with a message that names the reference, the malformed part
 * and the accepted form. */
QUILL_API quill_status quill_hub_check_reference(const char *text);

/* Resolves reference to a local file path, downloading the file when it is not cached. Stores a
 * new string in *path_out, which the caller frees with quill_hub_path_free. Errors:
 * QUILL_ERR_INVALID_ARG (malformed reference or missing cache location), QUILL_ERR_NOT_FOUND
 * (HTTP 404 or no .gguf file in the repository), QUILL_ERR_UPSTREAM (other HTTP errors or a size
 * mismatch), QUILL_ERR_IO (network or disk failure), QUILL_ERR_BUSY (another process is
 * downloading the same file). Each message names the URL or path and the next step. */
QUILL_API quill_status quill_hub_resolve(const char *reference, char **path_out);

/* Frees a path from quill_hub_resolve. Accepts NULL. */
QUILL_API void quill_hub_path_free(char *path);

QUILL_EXTERN_C_END

#endif
