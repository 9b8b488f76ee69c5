/*
 * kinds_shipped.c: the job kinds the installed bangerd runs.  The real kinds
 * (image.pull, vm.create, vm.exec, workspace.export, vm.delete) register here
 * as they land; until then the shipped daemon runs none and answers submits
 * of them with "unknown kind".
 */
#include "kind.h"

void kinds_register_all(void)
{
}
