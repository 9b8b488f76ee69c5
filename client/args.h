/*
 * args.h: the CLI's command-line parser: option tables, parsing, usage text
 * and "did you mean" suggestions.
 *
 * Each command declares one struct args_cmd (its name, positional synopsis,
 * options and handler).  Options are long (--name, --name=VALUE or
 * --name VALUE) with an optional one-letter short form; they may appear
 * anywhere after the command words, mixed with positionals; "--" ends them.
 * Global options (struct args_opt tables too) are accepted in the same places.
 */
#ifndef BANGER_CLIENT_ARGS_H
#define BANGER_CLIENT_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define ARGS_MAX_OPTS 16
#define ARGS_MAX_POS 256 /* `vm exec NAME -- CMD ARGS...` */

struct args_opt {
	const char *name;    /* long name without "--"; NULL ends a table */
	char shortname;      /* one letter, or 0 */
	const char *metavar; /* "N", "FILE"...; NULL for a flag without a value */
	const char *help;
};

/* The parsed values of one option table: val[i] belongs to opts[i].  A flag
 * that was given has val "" ; an absent option has NULL.  Pointers go into
 * argv (static storage for the life of the process). */
struct args {
	const char *val[ARGS_MAX_OPTS];
	const char *pos[ARGS_MAX_POS];
	int npos;
};

struct cli;

struct args_cmd {
	const char *name;     /* "job submit" */
	const char *synopsis; /* positionals and main flags: "SPEC.yaml [--follow]" */
	const char *summary;  /* one line for the command list */
	const char *details;  /* more text for --help, or NULL */
	const struct args_opt *opts;
	int min_pos, max_pos;
	/* Returns the process exit status. */
	int (*run)(struct cli *cli, const struct args *a);
};

/*
 * Parse argv[0..argc) against the command's options (cmd_opts, may be NULL)
 * and the global ones.  With stop_at_pos, stop at the first positional and
 * set *used to the number of words consumed (used for the options before the
 * command words).  Returns 0, or -1 with *errmsg (caller frees) naming the
 * offending word, with a suggestion (suggest_closest) when one is close.
 */
int args_parse(const struct args_opt *cmd_opts, struct args *a, const struct args_opt *global_opts,
	       struct args *g, int argc, char **argv, bool stop_at_pos, int *used, char **errmsg);

/* Print one option table, aligned, under a heading. */
void args_print_opts(FILE *f, const char *heading, const struct args_opt *opts);
/* Print "usage: banger NAME SYNOPSIS", the summary, details and options. */
void args_print_usage(FILE *f, const struct args_cmd *cmd, const struct args_opt *global_opts);

#endif
