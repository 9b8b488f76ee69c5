/*
 * run.c: running a tool (nft, iptables) from banger-helper: by absolute
 * path, with an argv the caller built from checked values, never through a
 * shell; a fixed environment; output captured for error messages; bounded
 * in time.  Safe from any thread: descriptors are close-on-exec, the child
 * gets a clean signal mask and default dispositions.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "util.h"

#define RUN_TIMEOUT_MS 20000
#define RUN_MAX_OUTPUT (64 * 1024)

const char *run_find(const char *const candidates[])
{
	for (size_t i = 0; candidates[i]; i++)
		if (access(candidates[i], X_OK) == 0)
			return candidates[i];
	return NULL;
}

static void write_all_fd(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

int run_argv(const char *const argv[], const char *input, char **out)
{
	static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
	int in[2] = {-1, -1}, outp[2] = {-1, -1};
	int rc = 0;
	pid_t pid;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	struct sb sb;
	sb_init(&sb);
	if (out)
		*out = NULL;
	if (pipe2(outp, O_CLOEXEC) < 0)
		return bg_errno(errno);
	if (input && pipe2(in, O_CLOEXEC) < 0) {
		rc = bg_errno(errno);
		close(outp[0]);
		close(outp[1]);
		return rc;
	}
	posix_spawn_file_actions_init(&fa);
	if (input)
		posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	else
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 2);
	posix_spawnattr_init(&attr);
	sigset_t none, def;
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGINT);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &def);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	int e = posix_spawn(&pid, argv[0], &fa, &attr, (char *const *)argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(outp[1]);
	if (input)
		close(in[0]);
	if (e) {
		close(outp[0]);
		if (input)
			close(in[1]);
		if (out)
			*out = xasprintf("cannot run %s: %s", argv[0], strerror(e));
		return bg_errno(e);
	}
	if (input) {
		write_all_fd(in[1], input, strlen(input));
		close(in[1]);
	}
	int64_t deadline = mono_us() + RUN_TIMEOUT_MS * 1000LL;
	bool timed_out = false;
	for (;;) {
		int64_t left = (deadline - mono_us()) / 1000;
		if (left <= 0) {
			timed_out = true;
			break;
		}
		struct pollfd pfd = {.fd = outp[0], .events = POLLIN};
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			timed_out = pr == 0;
			break;
		}
		char buf[4096];
		ssize_t n = read(outp[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (sb.len + (size_t)n <= RUN_MAX_OUTPUT)
			sb_add(&sb, buf, (size_t)n);
	}
	close(outp[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (timed_out)
		rc = BG_ERR_TIMEDOUT;
	else if (WIFEXITED(st))
		rc = WEXITSTATUS(st);
	else
		rc = BG_ERR_IO;
	/* trailing newlines out of messages */
	while (sb.len && (sb.buf[sb.len - 1] == '\n' || sb.buf[sb.len - 1] == ' '))
		sb.buf[--sb.len] = '\0';
	if (out)
		*out = sb_detach(&sb);
	else
		sb_release(&sb);
	return rc;
}
