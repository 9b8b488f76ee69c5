# t_spec.sh: bad specs are refused with file:line:col before anything is queued.

# submit_bad FILE: submit, expect exit 2, print stderr
submit_bad() {
	b job submit "$1" >"$T/out" 2>"$T/err"
	rc=$?
	[ $rc -eq 2 ] || fail "exit status $rc for a bad spec (want 2): $(cat "$T/err")"
	cat "$T/err"
}

test_spec_errors_refused_nothing_queued() {
	start_daemon
	spec typo.yaml <<'EOF2'
name: t
jobs:
  box:
    kind: test.echo
    txet: hi
EOF2
	err=$(submit_bad "$T/typo.yaml")
	expect_contains "$err" "typo.yaml:5:5: unknown key 'txet' in job 'box' (did you mean 'text'?)"

	spec cycle.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, needs: [b] }
  b: { kind: test.echo, needs: [a] }
EOF2
	expect_contains "$(submit_bad "$T/cycle.yaml")" "dependency cycle"

	spec kind.yaml <<'EOF2'
jobs:
  a: { kind: test.ecoh }
EOF2
	expect_contains "$(submit_bad "$T/kind.yaml")" "did you mean 'test.echo'"

	spec type.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, exit: three }
EOF2
	expect_contains "$(submit_bad "$T/type.yaml")" "type.yaml:2:31"

	printf 'jobs: [unclosed\n' >"$T/yaml.yaml"
	expect_contains "$(submit_bad "$T/yaml.yaml")" "yaml.yaml:"

	: >"$T/empty.yaml"
	expect_contains "$(submit_bad "$T/empty.yaml")" "no jobs"

	spec need.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, needs: [ghost] }
EOF2
	expect_contains "$(submit_bad "$T/need.yaml")" "ghost"

	expect_eq "$(b job list --json | jq '.jobs | length')" 0 "jobs queued after bad specs"
}

test_spec_too_big_refused() {
	start_daemon
	{
		echo "jobs:"
		echo "  a: { kind: test.echo }"
		head -c 50000000 /dev/zero | tr '\0' '#'
		echo
	} >"$T/big.yaml"
	err=$(submit_bad "$T/big.yaml")
	expect_contains "$err" "larger than"
	expect_eq "$(b job list --json | jq '.jobs | length')" 0 "jobs queued"
}

test_cli_usage_errors() {
	b job frobnicate >/dev/null 2>&1
	expect_eq $? 2 "unknown subcommand exit status"
	out=$(b job submit "$T/missing.yaml" 2>&1)
	expect_eq $? 2 "missing spec file exit status"
	expect_contains "$out" "missing.yaml"
	out=$(b ping 2>&1)
	[ $? -ne 0 ] || fail "ping without a daemon succeeded"
	expect_contains "$out" "cannot connect to bangerd"
}

# relative paths in a spec are resolved against the spec file's own
# directory, whoever submits it from wherever; a spec cannot set it
test_spec_directory_goes_with_the_submission() {
	start_daemon
	mkdir -p "$T/pipeline/sub" "$T/elsewhere"
	ln -s pipeline "$T/link"
	spec pipeline/sub/s.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, text: hi }
EOF2
	(cd "$T/elsewhere" && b job submit ../link/sub/s.yaml --follow >/dev/null) || fail submit
	expect_eq "$(jfield 1 result.dir)" "$(realpath "$T/pipeline/sub")" "the spec's directory"
	# a spec read from a pipe: the current directory
	(cd "$T/elsewhere" && cat "$T/pipeline/sub/s.yaml" | b job submit /dev/stdin --follow >/dev/null) ||
		fail "submit from stdin"
	expect_eq "$(jfield 2 result.dir)" "$(realpath "$T/elsewhere")" "a piped spec's directory"
	spec own.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, _dir: /etc }
EOF2
	expect_contains "$(submit_bad "$T/own.yaml")" "unknown key '_dir' in job 'a'"
}
