/*
 * tail.h: following a job's or a submission's events (job.tail), surviving a
 * daemon restart, and turning the final state into the CLI's exit status.
 */
#ifndef BANGER_CLIENT_TAIL_H
#define BANGER_CLIENT_TAIL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

struct cli;

struct tail_req {
	bool submission; /* id names a submission rather than a job */
	int64_t id;
	int64_t from;    /* first seq to print, >= 1 */
	bool follow;     /* wait until every job is final */
	bool json;       /* events as JSON lines */
};

/* Seconds to keep trying to reconnect after a drop, and the pause between
 * tries. */
#define TAIL_RECONNECT_US (30 * 1000000LL)
#define TAIL_RETRY_US (200 * 1000LL)

/*
 * Print the events of req as they arrive.  When the connection drops
 * (bangerd restarting), reconnect every TAIL_RETRY_US for up to
 * TAIL_RECONNECT_US and resume (a job: from the last seq printed + 1; a
 * submission: from the start, see tail.c); events already printed are never
 * printed again.  Blocks until the final reply.  Returns
 * the exit status: for a job, tail_job_status(); for a submission,
 * tail_submission_status(); 1 (or 2 for a usage error reply) on failure,
 * after printing why.
 */
int tail_run(struct cli *cli, const struct tail_req *req);

/*
 * Exit status for one job given a map with "state" and "exit_code?" (a
 * job.tail reply or a JOBSUMMARY): 0 when succeeded; else its exit_code when
 * it is 1..255; else 1.  With final_only, a job not in a final state gives 0.
 */
int tail_job_status(const msgpack_object *job, bool final_only);

/* Exit status for a submission from { jobs: [JOBSUMMARY] }: 0 when every job
 * succeeded; else the exit_code (1..255) of the first job that did not
 * succeed and has one; else 1. */
int tail_submission_status(const msgpack_object *result);

#endif
