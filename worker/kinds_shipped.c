/*
 * kinds_shipped.c: the job kinds the installed bangerd runs: the shipped
 * ones (kinds_register_shipped, kind.c) and nothing else.  The test daemon
 * links tests/kinds/ instead of this file and adds its test kinds.
 */
#include "kind.h"

void kinds_register_all(void)
{
	kinds_register_shipped();
}
