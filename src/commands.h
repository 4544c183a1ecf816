/* SPDX-License-Identifier: GPL-2.0 */
#ifndef DUPCACHE_COMMANDS_H
#define DUPCACHE_COMMANDS_H

#define DUPCACHE_VERSION "0.1.0"

/* Each returns the process exit code (see util.h). */
int cmd_report(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_daemon(int argc, char **argv);
int cmd_gate(int argc, char **argv);

#endif
