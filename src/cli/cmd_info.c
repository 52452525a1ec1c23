/* Placeholder until the subcommand lands; replaced by its implementation. */
#include <stdio.h>

#include "cli/commands.h"

int quill_cli_info(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "quill %s: not built yet\n", argv[0]);
    return 1;
}
