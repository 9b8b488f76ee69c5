/*
 * cmd.h: the CLI's commands.  Each is one struct args_cmd (name, options,
 * usage text, handler) defined next to its handler: cmd_job.c for the
 * `banger job ...` commands, cmd_oplog.c, cmd_ping.c.  main.c lists them.
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

#endif
