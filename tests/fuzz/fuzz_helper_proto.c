/*
 * fuzz_helper_proto.c: libFuzzer target over everything banger-helper does
 * with bytes from a client before it acts: the frame header check, the
 * msgpack decode, the envelope, the exact-field params check of the method
 * named, and each single-value check (names, paths, addresses, devices,
 * signals) fed the raw input.  Any crash, leak, out-of-bounds access or
 * undefined behaviour is a finding.
 *
 * Input: a stream of frames as a client would send them (4-byte big-endian
 * length, body); the checks run on each frame until the input ends.
 * `make test` runs it for a fixed number of runs (t_helper.sh), `make fuzz`
 * for longer; seeds are in tests/fuzz/corpus/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mpk.h"
#include "proto.h"
#include "rpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct hp_policy pol = {
	.runtime_dir = "/run/banger",
	.state_dir = "/var/lib/banger",
	.bridge = "bgbr0",
	.net = (10u << 24) | (213u << 16),
	.prefix = 24,
};

static void values(const char *s, size_t n)
{
	char err[600];
	int base, minor, sig;
	size_t off;
	uint32_t a;
	proto_check_tap(s, n, err, sizeof(err));
	proto_check_bridge(&pol, s, n, err, sizeof(err));
	proto_check_addr(&pol, s, n, &a, err, sizeof(err));
	proto_check_path(&pol, HP_BASE_STATE | HP_BASE_RUNTIME, s, n, &base, &off, err,
			 sizeof(err));
	proto_check_dm(s, n, err, sizeof(err));
	proto_check_loopdev(s, n, &minor, err, sizeof(err));
	proto_check_signal(s, n, &sig, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the single-value checks, on the whole input as one string */
	values((const char *)data, size);
	while (size >= 4) {
		int64_t n = proto_frame_len(data);
		if (n < 0 || (size_t)n > size - 4)
			return 0;
		msgpack_unpacked up;
		if (proto_decode(data + 4, (size_t)n, &up) == 0) {
			struct hp_request req;
			char *err = NULL;
			int rc = proto_parse_envelope(&up.data, &req, &err);
			free(err);
			err = NULL;
			if (rc == 0) {
				struct hp_args a;
				proto_check_params(req.method, &pol, req.params, &a, &err);
				free(err);
				err = NULL;
			}
			/* and the params of every method, whatever was asked */
			const msgpack_object *params = mpk_get(&up.data, "params");
			if (params)
				for (int m = 0; m < HP_M_COUNT_; m++) {
					struct hp_args a;
					proto_check_params(&hp_methods[m], &pol, params, &a, &err);
					free(err);
					err = NULL;
				}
			msgpack_unpacked_destroy(&up);
		}
		data += 4 + n;
		size -= 4 + (size_t)n;
	}
	return 0;
}
