/* test_launch_policy.c - the supervisor's decisions (daemon/launch_policy.h) and its record
 * (proto/launch_record.h): hostfile parsing, the world-size rule, what follows each kind of
 * launch end (done, preempted, failures, the same step again, the budget, a stop, bad flags),
 * the backoff, and the launch record's round trip and strict parsing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "daemon/launch_policy.h"
#include "proto/launch_record.h"
#include "tests/check.h"

static void test_hostfiles(void) {
  char hosts[8][64], err[256];
  int n = launch_parse_hostfile("# the cluster\nnode1 slots=2\n\n  node2\tslots=2 # spare\nnode3#x\n", hosts, 8, err,
                                sizeof err);
  CHECK(n == 3, "3 hosts, got %d (%s)", n, err);
  CHECK(n == 3 && !strcmp(hosts[0], "node1") && !strcmp(hosts[1], "node2") && !strcmp(hosts[2], "node3"),
        "names only: %s %s %s", hosts[0], hosts[1], hosts[2]);
  CHECK(launch_parse_hostfile("# only comments\n\n", hosts, 8, err, sizeof err) == -1 && strstr(err, "names no host"),
        "an empty hostfile is refused: %s", err);
  CHECK(launch_parse_hostfile("a\nb\nc\n", hosts, 2, err, sizeof err) == -1 && strstr(err, "more than 2"),
        "too many hosts are refused: %s", err);
  char longname[100];
  memset(longname, 'x', 70), longname[70] = 0;
  CHECK(launch_parse_hostfile(longname, hosts, 8, err, sizeof err) == -1 && strstr(err, "longer than 63"),
        "a 70-character name is refused: %s", err);
  n = launch_parse_host_list("h1,h2,h3", hosts, 8, err, sizeof err);
  CHECK(n == 3 && !strcmp(hosts[2], "h3"), "--hosts h1,h2,h3: %d", n);
  CHECK(launch_parse_host_list("h1,,h3", hosts, 8, err, sizeof err) == -1 && strstr(err, "empty"),
        "an empty name in --hosts is refused: %s", err);
}

static void test_world_size(void) {
  char why[256];
  CHECK(launch_hosts_to_use(3, 3, 1, 6, 1, why, sizeof why) == 3, "3 hosts divide batch 6");
  CHECK(launch_hosts_to_use(3, 3, 1, 32, 1, why, sizeof why) == 2, "32 = 2 x 16: 2 of 3 hosts");
  CHECK(launch_hosts_to_use(4, 4, 2, 32, 1, why, sizeof why) == 4, "4 hosts x 2 ranks divide 32");
  CHECK(launch_hosts_to_use(3, 4, 2, 24, 1, why, sizeof why) == 3, "3 x 2 divide 24");
  CHECK(launch_hosts_to_use(5, 5, 1, 7, 1, why, sizeof why) == 1, "7 is prime: 1 host");
  CHECK(launch_hosts_to_use(1, 3, 1, 6, 2, why, sizeof why) == 0 && strstr(why, "fewer than --min-hosts 2"),
        "below --min-hosts: %s", why);
  CHECK(launch_hosts_to_use(3, 3, 2, 7, 2, why, sizeof why) == 0 && strstr(why, "divides the global --batch 7"),
        "no world divides the batch: %s", why);
}

static void test_decisions(void) {
  launch_policy p;
  double wait;
  char why[512];
  launch_policy_init(&p, 5, 10);
  CHECK(launch_policy_after(&p, 0, 0, -1, 100, &wait, why, sizeof why) == LAUNCH_DONE, "exit 0 is done");
  CHECK(launch_policy_after(&p, 0, 1, -1, 100, &wait, why, sizeof why) == LAUNCH_DONE, "done even when stopping");
  CHECK(launch_policy_after(&p, 75, 1, -1, 100, &wait, why, sizeof why) == LAUNCH_STOP, "a stop asked is a stop");
  CHECK(launch_policy_after(&p, 137, 1, -1, 100, &wait, why, sizeof why) == LAUNCH_STOP,
        "a failure while stopping is a stop (resume by launching again)");
  CHECK(p.restarts == 0, "no relaunch counted yet");

  /* a preemption and a failure with progress: relaunch after the base backoff */
  CHECK(launch_policy_after(&p, 75, 0, -1, 40, &wait, why, sizeof why) == LAUNCH_RELAUNCH && wait == 10,
        "75 relaunches after --backoff: %g", wait);
  CHECK(launch_policy_after(&p, 137, 0, 40, 60, &wait, why, sizeof why) == LAUNCH_RELAUNCH && wait == 10,
        "a failure after progress relaunches after --backoff: %g", wait);
  /* the same step again: twice relaunched with a doubling pause, the third time given up */
  CHECK(launch_policy_after(&p, 137, 0, 50, 60, &wait, why, sizeof why) == LAUNCH_RELAUNCH,
        "a second failure at step 60 relaunches");
  double second = wait;
  CHECK(launch_policy_after(&p, 1, 0, 50, 60, &wait, why, sizeof why) == LAUNCH_GIVE_UP &&
            strstr(why, "3 launches in a row failed at step 60"),
        "the third failure at step 60 gives up: %s", why);
  CHECK(second == 20, "the pause doubles while a failure repeats without progress: %g", second);
  CHECK(p.restarts == 3, "3 relaunches counted: %d", p.restarts);

  /* failures at different steps never trip the same-step rule; the budget does */
  launch_policy_init(&p, 2, 0);
  CHECK(launch_policy_after(&p, 1, 0, -1, 10, &wait, why, sizeof why) == LAUNCH_RELAUNCH, "first failure");
  CHECK(launch_policy_after(&p, 1, 0, 10, 20, &wait, why, sizeof why) == LAUNCH_RELAUNCH, "second, elsewhere");
  CHECK(launch_policy_after(&p, 1, 0, 20, 30, &wait, why, sizeof why) == LAUNCH_GIVE_UP &&
            strstr(why, "restart budget is spent (--max-restarts 2)"),
        "the budget: %s", why);

  /* a preemption in between resets the same-step count */
  launch_policy_init(&p, 10, 0);
  launch_policy_after(&p, 1, 0, 0, 5, &wait, why, sizeof why);
  launch_policy_after(&p, 1, 0, 0, 5, &wait, why, sizeof why);
  launch_policy_after(&p, 75, 0, 0, 5, &wait, why, sizeof why);
  CHECK(launch_policy_after(&p, 1, 0, 0, 5, &wait, why, sizeof why) == LAUNCH_RELAUNCH,
        "a preemption between failures starts the count again");

  /* flags pollen train rejects: no relaunch can help */
  launch_policy_init(&p, 10, 0);
  CHECK(launch_policy_after(&p, 2, 0, -1, -1, &wait, why, sizeof why) == LAUNCH_GIVE_UP && strstr(why, "exit 2"),
        "exit 2 before any step gives up at once: %s", why);
  /* the backoff is capped */
  launch_policy_init(&p, 100, 200);
  for (int i = 0; i < 2; i++) launch_policy_after(&p, 1, 0, 0, 0, &wait, why, sizeof why);
  CHECK(wait == LAUNCH_BACKOFF_MAX_S, "the pause stops at %g s: %g", LAUNCH_BACKOFF_MAX_S, wait);
}

static void test_record(void) {
  launch_record r, back;
  launch_record_init(&r);
  r.attempt = 3, r.restarts = 2, r.world = 4, r.ranks_per_node = 2;
  r.n_hosts = 2, snprintf(r.hosts[0], 64, "node1"), snprintf(r.hosts[1], 64, "node2");
  r.n_excluded = 1, snprintf(r.excluded[0], 64, "node3");
  r.start_time = 1796000000.25, r.end_time = 1796000100.5;
  r.resumed_step = 40, r.last_step = 77, r.exit_status = 137;
  snprintf(r.outcome, sizeof r.outcome, "failed");
  snprintf(r.reason, sizeof r.reason, "rank 2 on node2 killed by \"signal\" 9");
  snprintf(r.decision, sizeof r.decision, "relaunch");
  r.has_last_failure = 1;
  r.last_failure = (launch_failure){"lost host node3 (rank 4)", 1, 12, 1795999000, 8.5};
  char *text = launch_record_json(&r), err[256];
  REQUIRE(text, "the record serialises");
  CHECK(!strchr(text, '\n'), "one line");
  CHECK(launch_record_parse(text, &back, err, sizeof err) == 0, "it parses back: %s", err);
  CHECK(back.attempt == 3 && back.restarts == 2 && back.world == 4 && back.n_hosts == 2 && back.n_excluded == 1 &&
            !strcmp(back.hosts[1], "node2") && !strcmp(back.excluded[0], "node3") && back.resumed_step == 40 &&
            back.last_step == 77 && back.exit_status == 137 && !strcmp(back.reason, r.reason) &&
            !strcmp(back.outcome, "failed") && !strcmp(back.decision, "relaunch") && back.has_last_failure &&
            back.last_failure.step == 12 && back.last_failure.down_s == 8.5 &&
            !strcmp(back.last_failure.reason, "lost host node3 (rank 4)"),
        "every field comes back: %s", text);
  free(text);

  launch_record_init(&r);
  r.attempt = 1;
  text = launch_record_json(&r);
  CHECK(launch_record_parse(text, &back, err, sizeof err) == 0 && back.exit_status == -1 && back.last_step == -1 &&
            !back.has_last_failure && !strcmp(back.outcome, "running"),
        "a running launch has no end: %s (%s)", text, err);
  free(text);

  static const struct {
    const char *text, *want;
  } bad[] = {
      {"not json", "not a JSON object"},
      {"{\"v\":9,\"attempt\":1}", "version 9 is newer"},
      {"{\"v\":1,\"attempt\":0,\"restarts\":0,\"hosts\":[],\"world\":0,\"ranks_per_node\":1,\"excluded\":[],"
       "\"start_time\":1,\"outcome\":\"running\",\"reason\":\"\",\"decision\":\"\",\"decision_reason\":\"\"}",
       "\"attempt\""},
      {"{\"v\":1,\"attempt\":1,\"restarts\":0,\"hosts\":[5],\"world\":0,\"ranks_per_node\":1,\"excluded\":[],"
       "\"start_time\":1,\"outcome\":\"running\",\"reason\":\"\",\"decision\":\"\",\"decision_reason\":\"\"}",
       "\"hosts\""},
      {"{\"v\":1,\"attempt\":1,\"restarts\":0,\"hosts\":[],\"world\":0,\"ranks_per_node\":1,\"excluded\":[],"
       "\"start_time\":1,\"outcome\":\"exploded\",\"reason\":\"\",\"decision\":\"\",\"decision_reason\":\"\"}",
       "\"outcome\""},
      {"{\"v\":1,\"attempt\":1,\"restarts\":0,\"hosts\":[],\"world\":0,\"ranks_per_node\":1,\"excluded\":[],"
       "\"start_time\":1,\"outcome\":\"running\",\"reason\":\"\",\"decision\":\"\",\"decision_reason\":\"\","
       "\"last_failure\":7}",
       "\"last_failure\""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK(launch_record_parse(bad[i].text, &back, err, sizeof err) == -1 && strstr(err, bad[i].want),
          "refused naming %s: %s", bad[i].want, err);
}

int main(void) {
  test_hostfiles();
  test_world_size();
  test_decisions();
  test_record();
  if (!check_failures) printf("ok: launch policy and record\n");
  return check_status();
}
