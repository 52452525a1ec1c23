/*
 * The CLI's subcommands. Each takes the arguments after its name and returns the process exit
 * code: 0 on success, 1 on a runtime failure, 2 on a usage error (unknown flag, bad value).
 */
#ifndef QUILL_CLI_COMMANDS_H
#define QUILL_CLI_COMMANDS_H

int quill_cli_run(int argc, char **argv);
int quill_cli_info(int argc, char **argv);
int quill_cli_tokenize(int argc, char **argv);
int quill_cli_detokenize(int argc, char **argv);
int quill_cli_template(int argc, char **argv);
int quill_cli_serve(int argc, char **argv);
int quill_cli_bench(int argc, char **argv);
int quill_cli_bench_serve(int argc, char **argv);

#endif
