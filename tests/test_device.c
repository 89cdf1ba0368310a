/* test_device.c - --device parsing and GPU selection, in every build: the names parse, auto
 * falls back to cpu when there is no usable GPU, and asking for cuda where it cannot be had
 * ends the process with one clear line and a non-zero status (checked in a child process):
 * "built without CUDA" in a CPU-only build, "no CUDA device visible" in a CUDA build without a
 * GPU. With a GPU, cuda selects device local_rank % count and auto selects it too. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/gradcheck.h"
#include "worker/device.h"

/* Runs device_select(kind, local_rank) in a child; returns its exit status and stderr. */
static int select_in_child(device_kind kind, int local_rank, char *err, size_t err_len) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    dup2(fd[1], 2);
    int g = -1;
    device_kind got = device_select(kind, local_rank, &g);
    _exit(got == DEVICE_CUDA ? 10 + g : 0);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < err_len && (r = read(fd[0], err + n, err_len - 1 - n)) > 0) n += (size_t)r;
  err[n] = '\0';
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void) {
  gc_expect(device_parse("cpu") == DEVICE_CPU && device_parse("cuda") == DEVICE_CUDA &&
                device_parse("auto") == DEVICE_AUTO,
            "device_parse: cpu, cuda, auto");
  gc_expect(device_parse("gpu") == -1 && device_parse("CUDA") == -1 && device_parse("") == -1 &&
                device_parse(NULL) == -1,
            "device_parse rejects gpu, CUDA, empty, NULL");
  gc_expect(strcmp(device_name(DEVICE_CUDA), "cuda") == 0, "device_name");

  int gpu = 7;
  gc_expect(device_select(DEVICE_CPU, 3, &gpu) == DEVICE_CPU && gpu == -1, "cpu selects cpu");

  char why[200], err[512], msg[700];
  int count = device_cuda_count(why, sizeof why);
  printf("built with CUDA: %s; CUDA devices: %d%s%s\n", device_built_with_cuda() ? "yes" : "no",
         count, count ? "" : " - ", why);
  if (count == 0) {
    gc_expect(why[0] != '\0', "device_cuda_count says why there is no GPU");
    gc_expect(select_in_child(DEVICE_AUTO, 0, err, sizeof err) == 0, "auto falls back to cpu");
    int st = select_in_child(DEVICE_CUDA, 0, err, sizeof err);
    const char *want = device_built_with_cuda() ? "--device cuda: no CUDA device visible ("
                                                : "--device cuda: this pollen was built without CUDA (cmake -DPOLLEN_CUDA=ON)";
    snprintf(msg, sizeof msg, "--device cuda without a GPU: exit %d, message: %.*s", st,
             (int)strcspn(err, "\n"), err);
    gc_expect(st == 1 && strstr(err, want) != NULL && strchr(err, '\n') == strrchr(err, '\n'),
              msg);
  } else {
    /* In this process (CUDA is initialised here already, and a forked child cannot use it). */
    for (int lr = 0; lr < 3; lr++) {
      int g = -1;
      device_kind k = device_select(DEVICE_CUDA, lr, &g);
      snprintf(msg, sizeof msg, "local rank %d selects GPU %d of %d (got %d)", lr, lr % count,
               count, g);
      gc_expect(k == DEVICE_CUDA && g == lr % count, msg);
    }
    gc_expect(device_select(DEVICE_AUTO, 0, &gpu) == DEVICE_CUDA && gpu == 0, "auto picks GPU 0");
  }
  return gc_finish("test_device");
}
