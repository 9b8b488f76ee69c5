/*
 * child.h: a hypervisor process held by a pidfd, shared by the QEMU and
 * Firecracker drivers: started by this process in a process group of its
 * own (a child, reaped here), or adopted after a restart (someone's: only
 * its pidfd tells when it is gone).  Waits poll the pidfd, so they work for
 * both; a pidfd never names a reused pid.
 *
 * One thread at a time per struct child (the drivers' handles are not
 * locked either).  Errors: 0 or a negative BG_ERR_*.
 */
#ifndef BANGER_CHILD_H
#define BANGER_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct child {
	pid_t pid;
	int pidfd;     /* -1: none */
	bool is_child; /* started here: reaped here */
	bool exited;
	int status;    /* wait status, once a child of ours was reaped */
};

/* pid 0, no pidfd. */
void child_init(struct child *c);
/* Close the pidfd (the process is left as it is). */
void child_close(struct child *c);

/*
 * Start argv (argv[0] looked up in PATH when search) in a process group of
 * its own, signals at their defaults and unblocked, stdin /dev/null, stdout
 * appended to out_path, stderr to err_path (NULL: with stdout), every other
 * descriptor closed; then hold it by a pidfd.  "cannot run 'X': ..." in
 * *errmsg when it cannot start (BG_ERR_NOENT for a missing program).
 */
int child_spawn(struct child *c, char *const argv[], bool search, const char *out_path,
		const char *err_path, char **errmsg);
/* Hold pid by a pidfd (not our child).  BG_ERR_NOENT when it is gone or
 * has exited (a zombie). */
int child_adopt(struct child *c, pid_t pid);

bool child_running(struct child *c);
/* 0 once it exited, BG_ERR_TIMEDOUT after timeout_us. */
int child_wait_exit(struct child *c, int64_t timeout_us);
/* SIGKILL its process group (and it, through the pidfd), wait up to 10 s.
 * 0 when it is (or was) gone. */
int child_kill(struct child *c);
/* " with status N", " on signal N", or "" (unknown: not ours, or running),
 * for messages. */
void child_exit_how(const struct child *c, char *buf, size_t n);

#endif
