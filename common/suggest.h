/*
 * suggest.h: helping a person fix bad input: "did you mean" suggestions,
 * input quoted safely back in a message, and YAML syntax errors turned into
 * `path:line:col: problem (context)`.
 *
 * Shared by the spec parser (worker/spec.c) and the config loader
 * (common/config.c) so that both word their messages the same way.
 */
#ifndef BANGER_SUGGEST_H
#define BANGER_SUGGEST_H

#include <stddef.h>
#include <yaml.h>

/*
 * The candidate closest to word: Levenshtein distance at most 2 (and less
 * than word's length), else the first candidate that word is a prefix of or
 * that is a prefix of word (at least 3 characters shared).  Ties go to the
 * earlier candidate.  Returns one of the candidates (not a copy) or NULL when
 * nothing is close.  NULL entries in candidates are skipped.
 */
const char *suggest_closest(const char *word, const char *const *candidates, size_t n);

/*
 * Input text made fit to quote in a one-line message: at most
 * SUGGEST_QUOTE_MAX bytes (cut at a UTF-8 boundary, "..." appended) with
 * control characters shown as '?'.  Writes into buf (size at least
 * SUGGEST_QUOTE_MAX + 4) and returns it.  s need not be NUL-terminated.
 */
#define SUGGEST_QUOTE_MAX 60
const char *suggest_quote(char *buf, const char *s, size_t n);

/*
 * The message for a failed yaml_parser_load(): "path:line:col: problem
 * (context)", 1-based, with the position of a reader error (bad UTF-8)
 * worked out from text.  The caller frees the string.
 */
char *suggest_yaml_error(const yaml_parser_t *parser, const char *path, const char *text,
			 size_t len);

#endif
