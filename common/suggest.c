/*
 * suggest.c: "did you mean" and YAML error messages (see suggest.h).
 *
 * suggest_closest() is called on error paths only, but may be asked to look
 * through every job name of a 100,000-job spec, so the edit distance is
 * computed in a band of width 2 and gives up as soon as a row exceeds it.
 */
#include <stdbool.h>
#include <string.h>

#include "suggest.h"
#include "util.h"

#define SUGGEST_MAX_DIST 2
#define SUGGEST_MAX_LEN 255
#define SUGGEST_MIN_PREFIX 3

/* Edit distance between a and b, or SUGGEST_MAX_DIST + 1 when larger. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
	size_t far = SUGGEST_MAX_DIST + 1;
	if (la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN)
		return far;
	if ((la > lb ? la - lb : lb - la) > SUGGEST_MAX_DIST)
		return far;
	size_t prev[SUGGEST_MAX_LEN + 1], cur[SUGGEST_MAX_LEN + 1];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t rowmin = cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			size_t v = sub < del ? sub : del;
			cur[j] = v < ins ? v : ins;
			if (cur[j] < rowmin)
				rowmin = cur[j];
		}
		if (rowmin > SUGGEST_MAX_DIST)
			return far;
		memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
	}
	return prev[lb] > SUGGEST_MAX_DIST ? far : prev[lb];
}

static int shares_prefix(const char *a, size_t la, const char *b, size_t lb)
{
	size_t n = la < lb ? la : lb;
	return n >= SUGGEST_MIN_PREFIX && memcmp(a, b, n) == 0;
}

const char *suggest_closest(const char *word, const char *const *candidates, size_t n)
{
	size_t lw = strlen(word);
	const char *best = NULL;
	size_t best_score = SUGGEST_MAX_DIST + 2; /* a prefix match scores MAX+1 */
	for (size_t i = 0; i < n; i++) {
		const char *c = candidates[i];
		if (!c)
			continue;
		size_t lc = strlen(c);
		size_t d = edit_distance(word, lw, c, lc);
		size_t score;
		if (d <= SUGGEST_MAX_DIST && d < lw)
			score = d;
		else if (shares_prefix(word, lw, c, lc))
			score = SUGGEST_MAX_DIST + 1;
		else
			continue;
		if (score < best_score) {
			best = c;
			best_score = score;
			if (score == 0)
				break;
		}
	}
	return best;
}

const char *suggest_quote(char *buf, const char *s, size_t n)
{
	size_t k = n;
	bool cut = false;
	if (k > SUGGEST_QUOTE_MAX) {
		k = SUGGEST_QUOTE_MAX;
		while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
			k--; /* do not split a UTF-8 sequence */
		cut = true;
	}
	for (size_t i = 0; i < k; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	memcpy(buf + k, cut ? "..." : "", cut ? 4 : 1);
	return buf;
}

char *suggest_yaml_error(const yaml_parser_t *parser, const char *path, const char *text,
			 size_t len)
{
	size_t line = parser->problem_mark.line, col = parser->problem_mark.column;
	if (parser->error == YAML_READER_ERROR) {
		/* The reader reports a byte offset, not a mark. */
		size_t off = parser->problem_offset < len ? parser->problem_offset : len;
		line = col = 0;
		for (size_t i = 0; i < off; i++) {
			if (text[i] == '\n')
				line++, col = 0;
			else
				col++;
		}
	}
	const char *problem = parser->problem ? parser->problem : "cannot parse YAML";
	if (parser->error == YAML_MEMORY_ERROR)
		problem = "out of memory";
	if (parser->context)
		return xasprintf("%s:%zu:%zu: %s (%s)", path, line + 1, col + 1, problem,
				 parser->context);
	return xasprintf("%s:%zu:%zu: %s", path, line + 1, col + 1, problem);
}
