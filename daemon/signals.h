/* signals.h - turns SIGTERM, SIGINT and SIGUSR1 (SLURM's warning before a kill) into a
 * request to stop cleanly at the next step boundary: checkpoint, then exit 75 ("preempted,
 * resume me"). A second SIGINT exits at once with 130, like an interrupted shell command.
 * The handler only sets a flag; the training loop reads it and every rank agrees on the stop
 * step through the per-step control message (proto/control.h). */
#ifndef POLLEN_SIGNALS_H
#define POLLEN_SIGNALS_H

/* Blocks the stop signals: one that arrives stays pending (through an exec too) until
 * signals_install. For the very start of a process, before its libraries initialise. */
void signals_hold(void);
/* Installs the handlers and unblocks the stop signals. */
void signals_install(void);
/* The signal number that asked for a stop, or 0. */
int signals_stop_requested(void);
const char *signals_name(int sig);

#endif
