/*
 * test_vm.c: the rules of the VM kinds that need no VM: which names are
 * DNS labels, and that the kinds are registered with the steps and fields
 * docs/vms.md describes (the integration tests, tests/integration/
 * t_vmjobs.sh, boot real VMs).
 */
#include <string.h>

#include "kind.h"
#include "test.h"
#include "vm.h"

TEST(vm_name_rules)
{
	static const char *const good[] = {"a", "box-7", "web", "0", "a-b-c",
					   "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij012"};
	static const char *const bad[] = {"", "-a", "a-", "Box", "a_b", "a.b", "a b", "é",
					  "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij0123"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(vm_name_ok(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!vm_name_ok(bad[i]));
	CHECK(!vm_name_ok(NULL));
}

static bool has_step(const struct kind *k, const char *name, bool resumable)
{
	for (size_t i = 0; i < k->nsteps; i++)
		if (!strcmp(k->steps[i].name, name))
			return k->steps[i].resumable == resumable;
	return false;
}

TEST(vm_kinds_registered)
{
	const struct kind *c = kinds_find("vm.create"), *e = kinds_find("vm.exec"),
			  *d = kinds_find("vm.delete");
	REQUIRE(c && e && d);
	CHECK_EQ_INT(c->nsteps, 6);
	CHECK(has_step(c, "reserve", true) && has_step(c, "disk", true) &&
	      has_step(c, "workspace", true) && has_step(c, "tap", true) &&
	      has_step(c, "start", true) && has_step(c, "wait", true));
	/* start and wait find the workspace step's result by its position */
	CHECK_EQ_STR(c->steps[2].name, "workspace");
	/* every create step that acquires something has an undo */
	for (size_t i = 0; i < 5; i++)
		CHECK(c->steps[i].plan && c->steps[i].undo);
	CHECK(c->wants_dir);
	/* an exec is never re-run after a restart unless the spec says retry */
	CHECK_EQ_INT(e->nsteps, 1);
	CHECK(has_step(e, "exec", false));
	CHECK(!e->retry_interrupted);
	CHECK(has_step(d, "stop", true) && has_step(d, "teardown", true));
	/* an export re-runs from the start after a crash, never resumes */
	const struct kind *x = kinds_find("workspace.export");
	REQUIRE(x);
	CHECK(has_step(x, "export", false) && x->steps[0].undo && x->retry_interrupted && x->wants_dir);
}
