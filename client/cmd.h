/*
 * cmd.h: the CLI's commands.  Each is one struct args_cmd (name, options,
 * usage text, handler) defined next to its handler: cmd_job.c for the
 * `banger job ...` commands, cmd_image.c for `banger image ...`, cmd_oplog.c,
 * cmd_ping.c.  main.c lists them.
 */
#ifndef BANGER_CLIENT_CMD_H
#define BANGER_CLIENT_CMD_H

#include "args.h"

extern const struct args_cmd cmd_job_submit;
extern const struct args_cmd cmd_job_list;
extern const struct args_cmd cmd_job_show;
extern const struct args_cmd cmd_job_cancel;
extern const struct args_cmd cmd_job_retry;
extern const struct args_cmd cmd_job_tail;
extern const struct args_cmd cmd_oplog;
extern const struct args_cmd cmd_ping;
extern const struct args_cmd cmd_image_list; /* cmd_image.c */
extern const struct args_cmd cmd_image_show;
extern const struct args_cmd cmd_image_rm;
extern const struct args_cmd cmd_image_cache_prune;
extern const struct args_cmd cmd_vm_list; /* cmd_vm.c */
extern const struct args_cmd cmd_vm_show;
extern const struct args_cmd cmd_vm_rm;
extern const struct args_cmd cmd_vm_exec;
extern const struct args_cmd cmd_vm_cp;
extern const struct args_cmd cmd_kernel_import; /* cmd_kernel.c */
extern const struct args_cmd cmd_kernel_list;
extern const struct args_cmd cmd_kernel_rm;
extern const struct args_cmd cmd_doctor; /* cmd_doctor.c */

#endif
