/*
 * test_queue.c: the SQLite queue backend through the queue interface
 * (queue.h): migrations, fencing by epoch, idempotent submits, claims with
 * per-kind slots and priorities, leases, dependents released or skipped.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "queue.h"
#include "test.h"
#include "util.h"

static struct queue *open_q(const char *name)
{
	char *path = xasprintf("%s/%s.db", test_tmpdir(), name);
	struct queue *q = NULL;
	char *err = NULL;
	int rc = queue_open(path, NULL, &q, &err);
	if (rc)
		test_fail(__FILE__, __LINE__, "queue_open: %s", err ? err : "?");
	free(err);
	free(path);
	return q;
}

/* Submit jobs of the given kinds (needs: each job i needs needs[i] if >= 0). */
static int64_t submit(struct queue *q, const char *key, size_t n, const char *const *kinds,
		      const int64_t *prio, const int *needs, const bool *always, int64_t *ids,
		      bool *existing)
{
	struct q_newjob jobs[16];
	size_t need_idx[16];
	char names[16][24];
	memset(jobs, 0, sizeof(jobs));
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "j%zu", i);
		jobs[i].name = names[i];
		jobs[i].kind = kinds[i];
		jobs[i].max_attempts = 3;
		jobs[i].retry = -1;
		jobs[i].priority = prio ? prio[i] : 0;
		jobs[i].when_always = always ? always[i] : false;
		if (needs && needs[i] >= 0) {
			need_idx[i] = (size_t)needs[i];
			jobs[i].needs = &need_idx[i];
			jobs[i].nneeds = 1;
		}
	}
	struct q_submit s = {.name = "t", .key = key, .jobs = jobs, .njobs = n, .now = 1000};
	int64_t sub = 0;
	bool ex = false;
	int rc = q->ops->submit(q, &s, &sub, ids, &ex);
	CHECK_EQ_INT(rc, 0);
	if (existing)
		*existing = ex;
	uint64_t no;
	CHECK_EQ_INT(q->ops->commit(q, &no), 0);
	return sub;
}

static int claim_all(struct queue *q, struct q_claim_limit *lim, size_t nl, struct q_job *out)
{
	int n = 0;
	CHECK_EQ_INT(q->ops->claim(q, "node-a", 2000, 9000, lim, nl, 16, out, &n), 0);
	return n;
}

static void release_all(struct q_job *jobs, int n)
{
	for (int i = 0; i < n; i++)
		q_job_release(&jobs[i]);
}

TEST(queue_migrations_applied)
{
	struct queue *q = open_q("mig");
	REQUIRE(q);
	q->ops->close(q);
	char *path = xasprintf("%s/mig.db", test_tmpdir());
	sqlite3 *db;
	REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
	sqlite3_stmt *st;
	sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
	sqlite3_step(st);
	CHECK_EQ_INT(sqlite3_column_int(st, 0), queue_schema_version());
	sqlite3_finalize(st);
	/* a database from a newer banger is refused, and left as it is */
	sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL);
	sqlite3_close(db);
	struct queue *q2 = NULL;
	char *err = NULL;
	CHECK_EQ_INT(queue_open(path, NULL, &q2, &err), BG_ERR_SCHEMA);
	CHECK_STR_CONTAINS(err ? err : "", "schema version 999 is newer");
	free(err);
	free(path);
}

TEST(queue_fencing_by_epoch)
{
	struct queue *q = open_q("fence");
	REQUIRE(q);
	const char *kinds[] = {"k"};
	int64_t ids[1];
	submit(q, NULL, 1, kinds, NULL, NULL, NULL, ids, NULL);
	struct q_claim_limit lim[] = {{"k", 4}};
	struct q_job jobs[16];
	REQUIRE(claim_all(q, lim, 1, jobs) == 1);
	int64_t e1 = jobs[0].epoch;
	CHECK_EQ_INT(jobs[0].attempt, 1);
	CHECK_EQ_INT(q->ops->step_begin(q, ids[0], e1, 1, 1, "s", "\xc0", 1, 3000), 0);
	int64_t e2 = 0;
	CHECK_EQ_INT(q->ops->reclaim(q, ids[0], e1, "node-a", 9000, 1, &e2), 0);
	CHECK(e2 == e1 + 1);
	/* the old holder can no longer write anything about the attempt */
	CHECK_EQ_INT(q->ops->step_done(q, ids[0], e1, 1, 1, NULL, 0, 3001), BG_ERR_STALE);
	CHECK_EQ_INT(q->ops->set_state(q, ids[0], e1, JS_ROLLING_BACK, "x", "failed"),
		     BG_ERR_STALE);
	struct q_finish f = {.state = JS_SUCCEEDED, .close_attempt = true, .now = 3002};
	CHECK_EQ_INT(q->ops->finish(q, ids[0], e1, &f, NULL, NULL), BG_ERR_STALE);
	bool lost = false;
	CHECK_EQ_INT(q->ops->heartbeat(q, "node-a", 9500, &ids[0], &e1, 1, &lost), 0);
	CHECK(lost);
	/* the new one can */
	CHECK_EQ_INT(q->ops->step_done(q, ids[0], e2, 1, 1, NULL, 0, 3003), 0);
	CHECK_EQ_INT(q->ops->heartbeat(q, "node-a", 9500, &ids[0], &e2, 1, &lost), 0);
	CHECK(!lost);
	CHECK_EQ_INT(q->ops->finish(q, ids[0], e2, &f, NULL, NULL), 0);
	struct q_job j;
	REQUIRE(q->ops->job_get(q, ids[0], &j) == 0);
	CHECK_EQ_STR(j.state, JS_SUCCEEDED);
	CHECK_EQ_INT(j.crashes, 0);
	q_job_release(&j);
	release_all(jobs, 1);
	q->ops->close(q);
}

TEST(queue_idempotent_submit)
{
	struct queue *q = open_q("idem");
	REQUIRE(q);
	const char *kinds[] = {"k", "k"};
	int64_t ids[2], ids2[2] = {0, 0};
	bool ex = true;
	int64_t s1 = submit(q, "key-1", 2, kinds, NULL, NULL, NULL, ids, &ex);
	CHECK(!ex);
	int64_t s2 = submit(q, "key-1", 2, kinds, NULL, NULL, NULL, ids2, &ex);
	CHECK(ex);
	CHECK_EQ_INT(s2, s1);
	int64_t s3 = submit(q, "key-2", 2, kinds, NULL, NULL, NULL, ids2, &ex);
	CHECK(!ex);
	CHECK(s3 != s1);
	q->ops->close(q);
}

TEST(queue_claim_slots_and_priority)
{
	struct queue *q = open_q("claim");
	REQUIRE(q);
	const char *kinds[] = {"a", "a", "a", "b", "b", "c"};
	int64_t prio[] = {0, 5, 1, 0, 0, 0};
	int64_t ids[6];
	submit(q, NULL, 6, kinds, prio, NULL, NULL, ids, NULL);
	struct q_claim_limit lim[] = {{"a", 2}, {"b", 5}}; /* c is not ours */
	struct q_job jobs[16];
	int n = claim_all(q, lim, 2, jobs);
	REQUIRE(n == 4);
	/* the two a's with the highest priority, first */
	CHECK_EQ_INT(jobs[0].id, ids[1]);
	CHECK_EQ_INT(jobs[1].id, ids[2]);
	int nb = 0;
	for (int i = 0; i < n; i++) {
		CHECK(strcmp(jobs[i].kind, "c") != 0);
		nb += strcmp(jobs[i].kind, "b") == 0;
		CHECK_EQ_STR(jobs[i].state, JS_RUNNING);
	}
	CHECK_EQ_INT(nb, 2);
	release_all(jobs, n);
	q->ops->close(q);
}

static int skipped_count;
static void count_skipped(int64_t job, void *arg)
{
	skipped_count++;
}

TEST(queue_dependents_released_or_skipped)
{
	struct queue *q = open_q("deps");
	REQUIRE(q);
	/* j0 <- j1 (on_success) <- j3 ; j0 <- j2 (always) */
	const char *kinds[] = {"k", "k", "k", "k"};
	int needs[] = {-1, 0, 0, 1};
	bool always[] = {false, false, true, false};
	int64_t ids[4];
	submit(q, NULL, 4, kinds, NULL, needs, always, ids, NULL);
	struct q_claim_limit lim[] = {{"k", 10}};
	struct q_job jobs[16];
	int n = claim_all(q, lim, 1, jobs);
	REQUIRE(n == 1); /* only j0 is ready */
	CHECK_EQ_INT(jobs[0].id, ids[0]);
	struct q_finish f = {.state = JS_FAILED, .close_attempt = true, .error = "boom",
			     .now = 5000};
	skipped_count = 0;
	CHECK_EQ_INT(q->ops->finish(q, ids[0], jobs[0].epoch, &f, count_skipped, NULL), 0);
	CHECK_EQ_INT(skipped_count, 2); /* j1 and, through it, j3 */
	struct q_job j;
	REQUIRE(q->ops->job_get(q, ids[3], &j) == 0);
	CHECK_EQ_STR(j.state, JS_SKIPPED);
	q_job_release(&j);
	release_all(jobs, n);
	n = claim_all(q, lim, 1, jobs);
	REQUIRE(n == 1); /* the `when: always` job runs */
	CHECK_EQ_INT(jobs[0].id, ids[2]);
	release_all(jobs, n);
	q->ops->close(q);
}

TEST(queue_events_sequence_per_job)
{
	struct queue *q = open_q("events");
	REQUIRE(q);
	int64_t seq = 0;
	for (int i = 1; i <= 3; i++) {
		CHECK_EQ_INT(q->ops->event_append(q, 7, i, "log", "\xa1x", 2, &seq), 0);
		CHECK_EQ_INT(seq, i);
	}
	CHECK_EQ_INT(q->ops->event_append(q, 8, 4, "log", NULL, 0, &seq), 0);
	CHECK_EQ_INT(seq, 1);
	q->ops->close(q);
}

TEST(queue_images_by_ref_and_digest)
{
	struct queue *q = open_q("images");
	REQUIRE(q);
	struct q_image img = {.digest = "sha256:aaaa", .rootfs = "/s/images/aaaa/rootfs.ext4",
			      .size = 4096, .content = 1000, .source = "reg/x:1", .job = 7};
	CHECK_EQ_INT(q->ops->image_put(q, &img, "reg/x:1", 100), 0);
	CHECK_EQ_INT(q->ops->image_put(q, &img, "reg/x:latest", 101), 0);
	struct q_image got;
	REQUIRE(q->ops->image_get(q, "reg/x:latest", &got) == 0);
	CHECK_EQ_STR(got.digest, "sha256:aaaa");
	CHECK_EQ_INT(got.nrefs, 2);
	CHECK_EQ_INT(got.size, 4096);
	q_image_release(&got);
	REQUIRE(q->ops->image_get(q, "sha256:aaaa", &got) == 0);
	CHECK_EQ_STR(got.rootfs, "/s/images/aaaa/rootfs.ext4");
	q_image_release(&got);
	/* a ref moves to a new digest when the tag does */
	struct q_image img2 = img;
	img2.digest = "sha256:bbbb";
	CHECK_EQ_INT(q->ops->image_put(q, &img2, "reg/x:latest", 102), 0);
	REQUIRE(q->ops->image_get(q, "reg/x:latest", &got) == 0);
	CHECK_EQ_STR(got.digest, "sha256:bbbb");
	q_image_release(&got);
	CHECK_EQ_INT(q->ops->image_delete(q, "sha256:aaaa"), 0);
	CHECK_EQ_INT(q->ops->image_get(q, "reg/x:1", &got), BG_ERR_NOENT);
	CHECK_EQ_INT(q->ops->image_delete(q, "sha256:aaaa"), BG_ERR_NOENT);
	q->ops->close(q);
}

static int count_vms_cb(const struct q_vm *vm, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

TEST(queue_vms_names_addresses_and_states)
{
	struct queue *q = open_q("vms");
	REQUIRE(q);
	struct q_vm vm = {.id = 7, .name = "box-1", .state = VS_CREATING, .image = "sha256:aa",
			  .rootfs = "/s/images/aa/rootfs.ext4", .kernel = "6.1", .vcpus = 1,
			  .memory = 256 << 20, .address = "10.213.0.2", .tap = "bg00000007",
			  .overlay = "/s/vms/7/root.qcow2", .run_dir = "/r/vms/7", .node = "n1",
			  .created = 100, .created_by = 7};
	CHECK_EQ_INT(q->ops->vm_put(q, &vm), 0);
	/* a second live VM may not take the name or the address */
	struct q_vm other = vm;
	other.id = 8;
	other.created_by = 8;
	other.address = "10.213.0.3";
	CHECK_EQ_INT(q->ops->vm_put(q, &other), BG_ERR_EXIST);
	CHECK_STR_CONTAINS(q->errmsg, "box-1");
	other.name = "box-2";
	other.address = "10.213.0.2";
	CHECK_EQ_INT(q->ops->vm_put(q, &other), BG_ERR_EXIST);
	other.address = NULL; /* no NIC */
	other.tap = NULL;
	CHECK_EQ_INT(q->ops->vm_put(q, &other), 0);

	struct q_vm got;
	REQUIRE(q->ops->vm_find(q, "box-1", &got) == 0);
	CHECK_EQ_INT(got.id, 7);
	CHECK_EQ_STR(got.state, VS_CREATING);
	CHECK_EQ_INT(got.memory, 256 << 20);
	CHECK_EQ_STR(got.tap, "bg00000007");
	CHECK(got.pid == 0 && got.deleted == 0 && got.deleted_by == 0);
	q_vm_release(&got);
	REQUIRE(q->ops->vm_get(q, 8, &got) == 0);
	CHECK(got.address == NULL && got.tap == NULL);
	q_vm_release(&got);

	CHECK_EQ_INT(q->ops->vm_set_state(q, 7, VS_RUNNING, 4242, NULL, 0, 200), 0);
	REQUIRE(q->ops->vm_get(q, 7, &got) == 0);
	CHECK_EQ_STR(got.state, VS_RUNNING);
	CHECK_EQ_INT(got.pid, 4242);
	q_vm_release(&got);
	/* pid < 0 keeps it; an error is recorded */
	CHECK_EQ_INT(q->ops->vm_set_state(q, 7, VS_STOPPED, -1, "qemu exited", 0, 300), 0);
	REQUIRE(q->ops->vm_get(q, 7, &got) == 0);
	CHECK_EQ_INT(got.pid, 4242);
	CHECK_EQ_STR(got.error, "qemu exited");
	q_vm_release(&got);
	CHECK_EQ_INT(q->ops->vm_set_state(q, 99, VS_RUNNING, 1, NULL, 0, 300), BG_ERR_NOENT);

	/* deleted: kept, with who and when; the name and address are free again */
	CHECK_EQ_INT(q->ops->vm_set_state(q, 7, VS_DELETED, -1, NULL, 12, 400), 0);
	int n = 0;
	CHECK_EQ_INT(q->ops->vm_list(q, false, count_vms_cb, &n), 0);
	CHECK_EQ_INT(n, 1);
	n = 0;
	CHECK_EQ_INT(q->ops->vm_list(q, true, count_vms_cb, &n), 0);
	CHECK_EQ_INT(n, 2);
	REQUIRE(q->ops->vm_find(q, "box-1", &got) == 0);
	CHECK_EQ_STR(got.state, VS_DELETED);
	CHECK_EQ_INT(got.deleted, 400);
	CHECK_EQ_INT(got.deleted_by, 12);
	q_vm_release(&got);
	struct q_vm again = vm;
	again.id = 9;
	again.created_by = 9;
	CHECK_EQ_INT(q->ops->vm_put(q, &again), 0);
	/* by name: the live one wins over the deleted one */
	REQUIRE(q->ops->vm_find(q, "box-1", &got) == 0);
	CHECK_EQ_INT(got.id, 9);
	q_vm_release(&got);
	/* a retried vm.create replaces its own row */
	again.state = VS_RUNNING;
	CHECK_EQ_INT(q->ops->vm_put(q, &again), 0);
	REQUIRE(q->ops->vm_get(q, 9, &got) == 0);
	CHECK_EQ_STR(got.state, VS_RUNNING);
	q_vm_release(&got);
	CHECK_EQ_INT(q->ops->vm_find(q, "nope", &got), BG_ERR_NOENT);
	uint64_t no;
	CHECK_EQ_INT(q->ops->commit(q, &no), 0);
	q->ops->close(q);
}
