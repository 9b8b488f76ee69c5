/*
 * child.c: see child.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "err.h"
#include "util.h"

extern char **environ;

#define KILL_WAIT_US (10 * 1000000LL)

void child_init(struct child *c)
{
	memset(c, 0, sizeof(*c));
	c->pidfd = -1;
}

void child_close(struct child *c)
{
	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pidfd = -1;
}

int child_spawn(struct child *c, char *const argv[], bool search, const char *out_path,
		const char *err_path, char **errmsg)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (err_path)
		posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_APPEND,
						 0600);
	else
		posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
					      POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	int rc = search ? posix_spawnp(&pid, argv[0], &fa, &at, argv, environ)
			: posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (rc != 0) {
		errmsg_set(errmsg, "cannot run '%s': %s", argv[0], strerror(rc));
		return bg_errno(rc);
	}
	child_init(c);
	c->pid = pid;
	c->is_child = true;
	c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (c->pidfd < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "pidfd_open of '%s' (pid %d): %s", argv[0], (int)pid,
			   strerror(errno));
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		c->exited = true;
		return rc;
	}
	return 0;
}

int child_adopt(struct child *c, pid_t pid)
{
	child_init(c);
	c->pid = pid;
	c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (c->pidfd < 0)
		return BG_ERR_NOENT;
	/* readable already: it exited (a zombie its parent has not reaped) */
	struct pollfd p = {c->pidfd, POLLIN, 0};
	if (poll(&p, 1, 0) > 0) {
		child_close(c);
		return BG_ERR_NOENT;
	}
	return 0;
}

/* A child of ours that exited: its status, and no zombie. */
static void reap(struct child *c)
{
	if (c->is_child && !c->exited) {
		int st;
		if (waitpid(c->pid, &st, WNOHANG) == c->pid)
			c->status = st;
	}
	c->exited = true;
}

bool child_running(struct child *c)
{
	if (c->pidfd < 0 || c->exited)
		return false;
	struct pollfd p = {c->pidfd, POLLIN, 0};
	if (poll(&p, 1, 0) > 0) {
		reap(c);
		return false;
	}
	return true;
}

int child_wait_exit(struct child *c, int64_t timeout_us)
{
	int64_t deadline = mono_us() + timeout_us;
	while (child_running(c)) {
		int64_t left = deadline - mono_us();
		if (left <= 0)
			return BG_ERR_TIMEDOUT;
		struct pollfd p = {c->pidfd, POLLIN, 0};
		poll(&p, 1, (int)(left / 1000) + 1);
	}
	return 0;
}

int child_kill(struct child *c)
{
	if (!child_running(c))
		return 0;
	kill(-c->pid, SIGKILL);
	syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0);
	return child_wait_exit(c, KILL_WAIT_US);
}

void child_exit_how(const struct child *c, char *buf, size_t n)
{
	buf[0] = 0;
	if (c->is_child && c->exited && WIFEXITED(c->status))
		snprintf(buf, n, " with status %d", WEXITSTATUS(c->status));
	else if (c->is_child && c->exited && WIFSIGNALED(c->status))
		snprintf(buf, n, " on signal %d", WTERMSIG(c->status));
}
