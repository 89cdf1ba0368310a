/* signals.c - async-signal-safe stop requests (see signals.h). */
#include "daemon/signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal, interrupts;

static void on_signal(int sig) {
  if (sig == SIGINT && ++interrupts >= 2) {
    static const char msg[] = "pollen: second interrupt: exiting now without a checkpoint\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(130);
  }
  if (!stop_signal) stop_signal = sig;
}

static void stop_signal_set(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGUSR1);
}

void signals_hold(void) {
  sigset_t set;
  stop_signal_set(&set);
  sigprocmask(SIG_BLOCK, &set, NULL);
}

void signals_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  /* A client closing the status socket must not kill the job. */
  signal(SIGPIPE, SIG_IGN);
  /* A stop that arrived while they were held is delivered now. */
  sigset_t set;
  stop_signal_set(&set);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int signals_stop_requested(void) { return stop_signal; }

const char *signals_name(int sig) {
  switch (sig) {
  case SIGTERM: return "SIGTERM";
  case SIGINT: return "SIGINT";
  case SIGUSR1: return "SIGUSR1";
  default: return "signal";
  }
}
