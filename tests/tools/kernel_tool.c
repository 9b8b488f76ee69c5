/*
 * kernel_tool.c: a test tool over worker/kernel.c, until `banger kernel
 * import|list|rm` are wired to the daemon.  Never installed.
 *
 *   kernel-tool import --state DIR --agent PATH [--name NAME] [--replace] SOURCE
 *   kernel-tool list   --state DIR [--json]
 *   kernel-tool show   --state DIR NAME          (metadata as JSON)
 *   kernel-tool rm     --state DIR NAME
 *   kernel-tool modules MODDIR                   (load order: NAME PATH DEPS lines)
 *
 * Exits 0 on success, 1 with "kernel-tool: MESSAGE" on stderr otherwise, 2
 * on a bad command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "kernel.h"
#include "log.h"

static int usage(void)
{
	fprintf(stderr, "usage: kernel-tool import --state DIR --agent PATH [--name NAME] "
			"[--replace] SOURCE\n"
			"       kernel-tool list --state DIR [--json]\n"
			"       kernel-tool show --state DIR NAME\n"
			"       kernel-tool rm --state DIR NAME\n"
			"       kernel-tool modules MODDIR\n");
	return 2;
}

static int fail(int rc, char *msg)
{
	fprintf(stderr, "kernel-tool: %s\n", msg ? msg : bg_strerror(rc));
	free(msg);
	return 1;
}

static void print_json(const struct kernel_info *k, bool last)
{
	printf("  {\"name\": \"%s\", \"version\": \"%s\", \"modular\": %s, \"modules\": [", k->name,
	       k->version, k->modular ? "true" : "false");
	for (size_t i = 0; i < k->nmodules; i++)
		printf("%s\"%s\"", i ? ", " : "", k->modules[i]);
	printf("], \"agent_sha256\": \"%s\", \"created\": %lld, \"vmlinuz\": \"%s\", "
	       "\"initrd\": \"%s\"}%s\n",
	       k->agent_sha256, (long long)k->created, k->vmlinuz, k->initrd, last ? "" : ",");
}

int main(int argc, char **argv)
{
	const char *state = NULL, *agent = NULL, *name = NULL, *pos = NULL;
	bool replace = false, json = false;
	char *err = NULL;
	int rc;

	log_init("warn", 2);
	log_set_ident("kernel-tool");
	if (argc < 2)
		return usage();
	const char *cmd = argv[1];
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--state") && i + 1 < argc)
			state = argv[++i];
		else if (!strcmp(argv[i], "--agent") && i + 1 < argc)
			agent = argv[++i];
		else if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--replace"))
			replace = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] == '-' || pos)
			return usage();
		else
			pos = argv[i];
	}

	if (!strcmp(cmd, "import")) {
		if (!state || !agent || !pos)
			return usage();
		struct kernel_import_opts o = {state, pos, name, agent, replace};
		struct kernel_info ki;
		if ((rc = kernel_import(&o, &ki, &err)) < 0)
			return fail(rc, err);
		printf("imported %s (version %s, %zu modules)\n", ki.name, ki.version, ki.nmodules);
		kernel_info_release(&ki);
		return 0;
	}
	if (!strcmp(cmd, "list")) {
		struct kernel_info *v;
		size_t n;
		if (!state || pos)
			return usage();
		if ((rc = kernel_list(state, &v, &n, &err)) < 0)
			return fail(rc, err);
		if (json)
			printf("[\n");
		for (size_t i = 0; i < n; i++) {
			if (json)
				print_json(&v[i], i + 1 == n);
			else
				printf("%-32s %-28s %s, %zu modules\n", v[i].name, v[i].version,
				       v[i].modular ? "modular" : "built-in drivers", v[i].nmodules);
		}
		if (json)
			printf("]\n");
		kernel_list_free(v, n);
		return 0;
	}
	if (!strcmp(cmd, "show")) {
		struct kernel_info ki;
		if (!state || !pos)
			return usage();
		if ((rc = kernel_get(state, pos, &ki, &err)) < 0)
			return fail(rc, err);
		print_json(&ki, true);
		kernel_info_release(&ki);
		return 0;
	}
	if (!strcmp(cmd, "rm")) {
		if (!state || !pos)
			return usage();
		if ((rc = kernel_remove(state, pos, &err)) < 0)
			return fail(rc, err);
		return 0;
	}
	if (!strcmp(cmd, "modules")) {
		struct kernel_module *m;
		size_t n;
		if (!pos)
			return usage();
		if ((rc = kernel_module_order(pos, &m, &n, &err)) < 0)
			return fail(rc, err);
		for (size_t i = 0; i < n; i++)
			printf("%s %s %s\n", m[i].name, m[i].path, m[i].deps[0] ? m[i].deps : "-");
		kernel_modules_free(m, n);
		return 0;
	}
	return usage();
}
