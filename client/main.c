/*
 * main.c: `banger`, the command-line client of bangerd.
 *
 * Reads global options, finds the command (one word, or a group and more
 * words: "job list", "image cache prune"), parses the command's options and
 * hands over to its handler (see cmd.h).  Usage errors exit 2 with a
 * suggestion when a word is close to a known one; `--help` anywhere prints
 * the usage of the command it follows.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cmd.h"
#include "protocol.h"
#include "suggest.h"
#include "util.h"

enum { G_RUNTIME_DIR, G_CONFIG, G_VERBOSE, G_HELP, G_VERSION };

static const struct args_opt global_opts[] = {
	[G_RUNTIME_DIR] = {"runtime-dir", 0, "DIR", "where bangerd's socket is (overrides "
						    "$BANGER_RUNTIME_DIR and the config)"},
	[G_CONFIG] = {"config", 0, "FILE", "configuration file that gives the runtime_dir"},
	[G_VERBOSE] = {"verbose", 'v', NULL, "print the operation id and the socket on stderr"},
	[G_HELP] = {"help", 'h', NULL, "print usage and exit"},
	[G_VERSION] = {"version", 0, NULL, "print banger's version and exit"},
	{NULL, 0, NULL, NULL},
};

extern const struct args_cmd cmd_system_install; /* cmd_system.c */

static const struct args_cmd *const commands[] = {
	&cmd_job_submit, &cmd_job_list, &cmd_job_show, &cmd_job_cancel,
	&cmd_job_retry,  &cmd_job_tail, &cmd_oplog,    &cmd_ping,
	&cmd_system_install, &cmd_image_list, &cmd_image_show, &cmd_image_rm,
	&cmd_image_cache_prune,
	&cmd_vm_list, &cmd_vm_show, &cmd_vm_rm, &cmd_vm_exec, &cmd_vm_cp,
	&cmd_kernel_import, &cmd_kernel_list, &cmd_kernel_rm, &cmd_doctor,
};

/* Top-level words: the groups and the one-word commands, plus "help". */
static const char *const top_words[] = {"job", "image", "vm", "kernel", "doctor", "oplog",
					"ping", "system", "help"};

static void print_commands(FILE *f, const char *group)
{
	size_t w = 0, glen = group ? strlen(group) : 0;
	char label[96];
	for (size_t pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < ARRAY_LEN(commands); i++) {
			const struct args_cmd *c = commands[i];
			if (group && (strncmp(c->name, group, glen) != 0 || c->name[glen] != ' '))
				continue;
			const char *name = group ? c->name + glen + 1 : c->name;
			/* Only the positionals of the synopsis: up to the first option. */
			const char *opt = strstr(c->synopsis, "[-");
			int plen = opt ? (int)(opt - c->synopsis) : (int)strlen(c->synopsis);
			while (plen > 0 && c->synopsis[plen - 1] == ' ')
				plen--;
			snprintf(label, sizeof(label), "%s%s%.*s", name, plen ? " " : "", plen,
				 c->synopsis);
			if (pass == 0) {
				if (strlen(label) > w)
					w = strlen(label);
				continue;
			}
			/* The first line of the summary only. */
			const char *nl = strchr(c->summary, '\n');
			int slen = nl ? (int)(nl - c->summary) : (int)strlen(c->summary);
			fprintf(f, "  %-*s  %.*s\n", (int)w, label, slen, c->summary);
		}
	}
}

static void usage_top(FILE *f, bool full)
{
	fputs("usage: banger [--runtime-dir DIR] [--config FILE] [-v] COMMAND [ARGS]\n", f);
	if (full)
		fputs("\nbanger talks to bangerd, the job-queue daemon of this host.\n", f);
	fputs("\ncommands:\n", f);
	print_commands(f, NULL);
	if (full) {
		fputc('\n', f);
		args_print_opts(f, "global options", global_opts);
		fputs("\nrun 'banger COMMAND --help' for a command's options; "
		      "see docs/cli.md for output formats and exit statuses\n",
		      f);
	} else {
		fputs("\nrun 'banger --help' for more\n", f);
	}
}

static void usage_group(FILE *f, const char *group)
{
	fprintf(f, "usage: banger %s COMMAND [ARGS]\n\ncommands:\n", group);
	print_commands(f, group);
	fprintf(f, "\nrun 'banger %s COMMAND --help' for a command's options\n", group);
}

static bool is_group(const char *w)
{
	size_t n = strlen(w);
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (strncmp(commands[i]->name, w, n) == 0 && commands[i]->name[n] == ' ')
			return true;
	return false;
}

/* A word that is not a command: say so, with the closest one. */
static int unknown_command(const char *group, const char *word)
{
	const char *cands[ARRAY_LEN(commands) + ARRAY_LEN(top_words)];
	size_t n = 0, glen = group ? strlen(group) : 0;
	const char *s = NULL;

	if (group) {
		for (size_t i = 0; i < ARRAY_LEN(commands); i++)
			if (strncmp(commands[i]->name, group, glen) == 0 && commands[i]->name[glen] == ' ')
				cands[n++] = commands[i]->name + glen + 1;
		s = suggest_closest(word, cands, n);
		cli_error("unknown %s command '%s'%s%s%s", group, word, s ? " (did you mean '" : "",
			  s ? s : "", s ? "'?)" : "");
		fputc('\n', stderr);
		usage_group(stderr, group);
		return CLI_EXIT_USAGE;
	}
	/* "banger list", "banger prune": the last word of a grouped command, alone. */
	for (size_t i = 0; i < ARRAY_LEN(commands) && !s; i++) {
		const char *sp = strrchr(commands[i]->name, ' ');
		if (sp && strcmp(sp + 1, word) == 0)
			s = commands[i]->name;
	}
	if (!s) {
		for (size_t i = 0; i < ARRAY_LEN(top_words); i++)
			cands[n++] = top_words[i];
		s = suggest_closest(word, cands, n);
	}
	cli_error("unknown command '%s'%s%s%s", word, s ? " (did you mean '" : "", s ? s : "",
		  s ? "'?)" : "");
	fputc('\n', stderr);
	usage_top(stderr, false);
	return CLI_EXIT_USAGE;
}

/*
 * Find the command named by words[0..n).  Returns it and sets *used to the
 * number of words its name took; returns NULL with *status set after
 * printing usage (a group without a command word; an unknown word), where
 * help says a group's usage was asked for rather than forgotten.  Groups
 * nest: "image" holds "image list" and the group "image cache", which holds
 * "image cache prune".
 */
static const struct args_cmd *find_command(char **words, int n, bool help, int *used,
					   int *status)
{
	const char *w = words[0];
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (strcmp(commands[i]->name, w) == 0) {
			*used = 1;
			return commands[i];
		}
	if (!is_group(w)) {
		*status = unknown_command(NULL, w);
		return NULL;
	}
	char *group = xstrdup(w);
	const struct args_cmd *found = NULL;
	for (int k = 1;; k++) {
		if (k >= n || words[k][0] == '-') {
			for (int j = k; j < n && !help; j++)
				help = strcmp(words[j], "--help") == 0 || strcmp(words[j], "-h") == 0;
			if (help) {
				usage_group(stdout, group);
				*status = CLI_EXIT_OK;
			} else {
				cli_error("%s: missing command", group);
				fputc('\n', stderr);
				usage_group(stderr, group);
				*status = CLI_EXIT_USAGE;
			}
			break;
		}
		char *name = xasprintf("%s %s", group, words[k]);
		for (size_t i = 0; i < ARRAY_LEN(commands) && !found; i++)
			if (strcmp(commands[i]->name, name) == 0)
				found = commands[i];
		if (found) {
			*used = k + 1;
			free(name);
			break;
		}
		if (!is_group(name)) {
			*status = unknown_command(group, words[k]);
			free(name);
			break;
		}
		free(group);
		group = name; /* a nested group: "image cache" */
	}
	free(group);
	return found;
}

static void short_usage(const struct args_cmd *cmd)
{
	fprintf(stderr, "usage: banger %s %s\nrun 'banger %s --help' for its options\n", cmd->name,
		cmd->synopsis, cmd->name);
}

static int version(void)
{
	printf("banger %s (protocol %d)\n", BANGER_VERSION, BG_PROTOCOL_VERSION);
	return CLI_EXIT_OK;
}

/* `banger help [COMMAND...]` */
static int help(char **words, int n)
{
	int used, status;
	if (n == 0) {
		usage_top(stdout, true);
		return CLI_EXIT_OK;
	}
	const struct args_cmd *cmd = find_command(words, n, true, &used, &status);
	if (!cmd)
		return status;
	args_print_usage(stdout, cmd, global_opts);
	return CLI_EXIT_OK;
}

static int finish(int status)
{
	/* Output that could not be written is a failure, not a success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (errno != EPIPE)
			cli_error("writing output: %s", strerror(errno));
		return status ? status : CLI_EXIT_FAIL;
	}
	return status;
}

int main(int argc, char **argv)
{
	struct args g, a;
	char *errmsg = NULL;
	int used = 0, status = 0;

	memset(&g, 0, sizeof(g));
	memset(&a, 0, sizeof(a));
	if (args_parse(NULL, NULL, global_opts, &g, argc - 1, argv + 1, true, &used, &errmsg)) {
		cli_error("%s", errmsg);
		free(errmsg);
		fputc('\n', stderr);
		usage_top(stderr, false);
		return CLI_EXIT_USAGE;
	}
	int i = 1 + used;
	if (i >= argc) {
		if (g.val[G_VERSION])
			return finish(version());
		if (g.val[G_HELP]) {
			usage_top(stdout, true);
			return finish(CLI_EXIT_OK);
		}
		cli_error("missing command");
		fputc('\n', stderr);
		usage_top(stderr, false);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[i], "help") == 0)
		return finish(help(argv + i + 1, argc - i - 1));

	const struct args_cmd *cmd =
		find_command(argv + i, argc - i, g.val[G_HELP] != NULL, &used, &status);
	if (!cmd)
		return finish(status);
	i += used;
	if (args_parse(cmd->opts, &a, global_opts, &g, argc - i, argv + i, false, &used, &errmsg)) {
		/* --help wins over an error elsewhere on the line. */
		if (!g.val[G_HELP]) {
			cli_error("%s: %s", cmd->name, errmsg);
			free(errmsg);
			short_usage(cmd);
			return CLI_EXIT_USAGE;
		}
		free(errmsg);
	}
	if (g.val[G_HELP]) {
		args_print_usage(stdout, cmd, global_opts);
		return finish(CLI_EXIT_OK);
	}
	if (g.val[G_VERSION])
		return finish(version());
	if (a.npos < cmd->min_pos || a.npos > cmd->max_pos) {
		if (a.npos < cmd->min_pos)
			cli_error("%s: missing argument", cmd->name);
		else
			cli_error("%s: unexpected argument '%s'", cmd->name, a.pos[cmd->max_pos]);
		short_usage(cmd);
		return CLI_EXIT_USAGE;
	}

	struct cli cli;
	cli_init(&cli);
	cli.runtime_dir_opt = g.val[G_RUNTIME_DIR];
	cli.config_opt = g.val[G_CONFIG];
	cli.verbose = g.val[G_VERBOSE] != NULL;
	status = cmd->run(&cli, &a);
	cli_release(&cli);
	return finish(status);
}
