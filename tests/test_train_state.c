/* test_train_state.c - the formats between the coordinator and the workers (proto/):
 *   the training-state schema: a state written as checkpoint sections reads back equal, with
 *     its extra fields; a section of the wrong size is refused by name; old checkpoints
 *     without num_classes/image_size read as unknown
 *   bn_stats_mean against a direct double average
 *   the resume, BN-statistics and config messages' checks
 *   control_decide's rule at mid-epoch, epoch-end and last steps
 *   plan_job's sizes, --max-steps, and too small a split */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "proto/control.h"
#include "proto/plan.h"
#include "proto/train_msg.h"
#include "proto/train_state.h"
#include "tests/check.h"

static char job_dir[64];

static void fill(float *x, size_t n, float base) {
  for (size_t i = 0; i < n; i++) x[i] = base + 0.25f * (float)i;
}

static void test_schema_round_trip(void) {
  train_state_shape shape = {37, 37, 12, 3};
  float params[37], m[37], v[37], stats[3 * 12], eval[12], ema[37];
  int64_t tracked[3] = {5, 6, 7};
  fill(params, 37, 1), fill(m, 37, 2), fill(v, 37, 3), fill(stats, 36, -4), fill(eval, 12, 9), fill(ema, 37, 5);
  train_state_view state = {params, m, v, tracked, stats, 3, NULL, NULL, 0, 41};
  ckptf_section_in sec[9];
  char names[3][TRAIN_STATE_NAME_MAX];
  int n = train_state_sections(&state, &shape, sec, names);
  CHECK(n == 7 && !strcmp(sec[0].name, TRAIN_STATE_PARAMS) && !strcmp(sec[6].name, "bn_stats.rank2"),
        "7 sections in schema order (%d)", n);
  state.eval_bn_stats = eval; /* evaluated with precise BN at this step */
  state.ema_params = ema, state.ema_updates = 7;
  n = train_state_sections(&state, &shape, sec, names);
  CHECK(n == 9 && !strcmp(sec[7].name, TRAIN_STATE_EMA) && !strcmp(sec[8].name, TRAIN_STATE_BN_EVAL),
        "ema.params, then bn_stats.eval, last (%d)", n);

  char err[512];
  ckpt_writer *w = ckpt_writer_start(job_dir, 2, err, sizeof err);
  REQUIRE(w, "%s", err);
  ckpt_snapshot s;
  memset(&s, 0, sizeof s);
  s.meta.step = 41, s.meta.epoch = 2, s.meta.world_size = 3;
  snprintf(s.meta.model, sizeof s.meta.model, "mnv3-small");
  train_state_extra x = {41, 0.125, 24, 0.5, 0.25, 5, 96, "epoch end", 7};
  s.meta.extra = train_state_extra_json(&x);
  s.sections = sec, s.n_sections = n;
  ckpt_writer_submit(w, &s);
  cJSON_Delete(s.meta.extra);
  REQUIRE(ckpt_writer_stop(w) == 0, "written");

  ckpt_loaded l;
  REQUIRE(ckpt_load_latest(job_dir, "mnv3-small", NULL, &l, err, sizeof err) == CKPT_LOADED, "%s", err);
  train_state_view got;
  float *got_stats = NULL;
  REQUIRE(train_state_from_file(&l.file, l.path, &shape, &got, &got_stats, err, sizeof err) == 0, "%s", err);
  CHECK(got.stats_ranks == 3, "3 ranks' statistics (%d)", got.stats_ranks);
  CHECK(!memcmp(got.params, params, sizeof params) && !memcmp(got.opt_m, m, sizeof m) &&
        !memcmp(got.opt_v, v, sizeof v) && !memcmp(got.bn_tracked, tracked, sizeof tracked),
        "the tensors read back bit for bit");
  CHECK(!memcmp(got.bn_stats, stats, sizeof stats), "the ranks' statistics side by side, in rank order");
  CHECK(got.eval_bn_stats && !memcmp(got.eval_bn_stats, eval, sizeof eval), "the evaluation's statistics");
  CHECK(got.ema_params && !memcmp(got.ema_params, ema, sizeof ema), "the weights' moving average");
  train_state_extra y;
  train_state_extra_read(l.file.meta.extra, l.file.meta.step, &y);
  CHECK(y.optimizer_steps == 41 && y.lr == 0.125 && y.global_batch == 24 && y.best_val_acc == 0.5 &&
        y.last_val_acc == 0.25 && y.num_classes == 5 && y.image_size == 96 && !strcmp(y.reason, "epoch end") &&
            y.ema_updates == 7,
        "extra fields round trip");
  free(got_stats);

  train_state_shape other = shape;
  other.n_opt = 36;
  CHECK(train_state_from_file(&l.file, l.path, &other, &got, &got_stats, err, sizeof err) == -1 &&
        strstr(err, "section 'opt.m'") && strstr(err, "148 bytes instead of 144") && got_stats == NULL,
        "a section of another size is refused by name: %s", err);
  other = shape;
  other.n_stats = 13;
  CHECK(train_state_from_file(&l.file, l.path, &other, &got, &got_stats, err, sizeof err) == -1 &&
        strstr(err, "section 'bn_stats.rank0'"), "BN statistics of another model: %s", err);
  ckpt_loaded_free(&l);

  /* A checkpoint of an earlier pollen: no class count or image size, no optimizer_steps. */
  cJSON *old = cJSON_Parse("{\"lr\":0.5,\"global_batch\":16}");
  train_state_extra_read(old, 99, &y);
  CHECK(y.optimizer_steps == 99 && y.num_classes == 0 && y.image_size == 0 && isnan(y.best_val_acc),
        "missing fields read as unknown, optimizer steps from the meta step");
  cJSON_Delete(old);
}

static void test_bn_stats_mean(void) {
  enum { R = 3, N = 5 };
  float per_rank[R * N], out[N];
  for (int i = 0; i < R * N; i++) per_rank[i] = 0.1f * (float)(i * i % 7) + 1e-3f * (float)i;
  bn_stats_mean(per_rank, R, N, out);
  for (int i = 0; i < N; i++) {
    double direct = ((double)per_rank[i] + per_rank[N + i] + per_rank[2 * N + i]) / 3;
    CHECK(out[i] == (float)direct, "element %d: %.9g, direct %.9g", i, out[i], direct);
  }
  bn_stats_mean(per_rank, 1, N, out);
  CHECK(!memcmp(out, per_rank, sizeof out), "one rank: its own statistics");
}

static void test_messages(void) {
  char err[256];
  resume_msg r = {TRAIN_MSG_VERSION, 1, 12, 1, 2, 12, 2, 3};
  CHECK(resume_msg_check(&r, 3, err, sizeof err) == 0, "%s", err);
  CHECK(resume_msg_check(&r, 4, err, sizeof err) == -1 && strstr(err, "this job has 4 ranks"), "%s", err);
  r.version = 2;
  CHECK(resume_msg_check(&r, 3, err, sizeof err) == -1 && strstr(err, "install one version everywhere"), "%s", err);
  r = (resume_msg){TRAIN_MSG_VERSION, 1, 12, 1, 2, 12, 0, 3};
  CHECK(resume_msg_check(&r, 3, err, sizeof err) == -1, "a found checkpoint written by 0 ranks");
  resume_msg fresh = {.version = TRAIN_MSG_VERSION, .world = 2};
  CHECK(resume_msg_check(&fresh, 2, err, sizeof err) == 0, "a fresh start: %s", err);

  bn_stats_msg b = {TRAIN_MSG_VERSION, 2, 100};
  CHECK(bn_stats_msg_check(&b, 2, 100, err, sizeof err) == 0, "%s", err);
  CHECK(bn_stats_msg_check(&b, 1, 100, err, sizeof err) == -1 && strstr(err, "expected rank 1"), "%s", err);
  CHECK(bn_stats_msg_check(&b, 2, 99, err, sizeof err) == -1 && strstr(err, "different models"), "%s", err);

  config_msg c = {TRAIN_MSG_VERSION, 0, 500};
  CHECK(config_msg_check(&c, 1000, err, sizeof err) == 0, "%s", err);
  c.json_bytes = 1001;
  CHECK(config_msg_check(&c, 1000, err, sizeof err) == -1 && strstr(err, "malformed"), "%s", err);
  c = (config_msg){7, 0, 500};
  CHECK(config_msg_check(&c, 1000, err, sizeof err) == -1 && strstr(err, "version 7"), "%s", err);
}

static void test_control_decide(void) {
  double ctl[CONTROL_N] = {0};
  job_position mid = {7, 0, 7}, epoch_end = {10, 0, 10}, last = {30, 2, 10};
  CHECK(control_decide(ctl, &mid, 30, 10) == CONTROL_GO_ON, "nothing asked");
  ctl[CONTROL_CHECKPOINT] = 1;
  CHECK(control_decide(ctl, &mid, 30, 10) == CONTROL_TAKE_CHECKPOINT, "checkpoint mid-epoch");
  CHECK(control_decide(ctl, &epoch_end, 30, 10) == CONTROL_GO_ON, "the epoch-end checkpoint serves");
  job_position max_steps_end = {12, 1, 2};
  CHECK(control_decide(ctl, &max_steps_end, 12, 10) == CONTROL_GO_ON, "the final checkpoint serves");
  ctl[CONTROL_STOP] = 2;
  CHECK(control_decide(ctl, &mid, 30, 10) == CONTROL_STOP_NOW, "stop");
  CHECK(control_decide(ctl, &epoch_end, 30, 10) == CONTROL_STOP_NOW, "stop at an epoch end");
  CHECK(control_decide(ctl, &last, 30, 10) == CONTROL_GO_ON, "a stop at the last step lets the job finish");
}

static void test_plan_job(void) {
  job_config cfg;
  job_config_defaults(&cfg);
  cfg.batch = 16, cfg.epochs = 3, cfg.size = 96;
  job_plan p;
  char err[256];
  CHECK(plan_job(&p, &cfg, 2, 100, 20, 5, err, sizeof err) == 0, "%s", err);
  CHECK(p.steps_per_epoch == 6 && p.total_steps == 18 && p.schedule_steps == 18 && p.local_batch == 8 &&
        p.image_size == 96 && p.classes == 5, "sizes (%d steps per epoch, %lld total)", p.steps_per_epoch,
        (long long)p.total_steps);
  cfg.max_steps = 7;
  plan_job(&p, &cfg, 2, 100, 20, 5, err, sizeof err);
  CHECK(p.total_steps == 7 && p.schedule_steps == 18, "--max-steps stops early, the schedule stays");
  CHECK(plan_job(&p, &cfg, 2, 15, 20, 5, err, sizeof err) == -1 && strstr(err, "fewer than one global batch of 16"),
        "%s", err);
}

static void remove_job(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", job_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", job_dir);
}

int main(void) {
  snprintf(job_dir, sizeof job_dir, "/tmp/pollen-test-state-XXXXXX");
  if (!mkdtemp(job_dir)) return 1;
  check_cleanup = remove_job;
  log_set_quiet(1);
  test_schema_round_trip();
  test_bn_stats_mean();
  test_messages();
  test_control_decide();
  test_plan_job();
  remove_job();
  if (!check_failures) printf("all training-state and message checks passed\n");
  return check_status();
}
