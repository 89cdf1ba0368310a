/* test_model.c - the architectures match torchvision's (parameter and state-dict counts,
 * names), training steps reduce the loss, eval is deterministic, steps after the first
 * allocate nothing, recomputed activations give the kept ones' gradients, and
 * optimizers/schedules follow their formulas. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "tests/check.h"
#include "worker/model.h"
#include "worker/optim.h"


/* From torchvision 0.14: sum(p.numel() for p in model.parameters()) and len(state_dict())
 * with num_classes=5 (tools/make_reference.py prints them; tests/ref/README.md lists them). */
static const struct {
  const char *name;
  double width;
  size_t params;
  int state_dict;
} expected[] = {
    {"mnv3-small", 1.0, 1522981, 244}, {"mnv3-small", 0.5, 406829, 244},
    {"mnv3-small", 0.35, 199549, 244}, {"mnv3-small", 0.75, 888765, 244},
    {"mnv3-large", 1.0, 4208437, 312}, {"mnv3-large", 0.5, 1096781, 312},
    {"mnv2", 1.0, 2230277, 314},       {"mnv2", 0.35, 402533, 314},
};

static void test_counts(void) {
  for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
    model_config cfg = {(model_arch)model_arch_parse(expected[i].name), expected[i].width, 5, 0.2f, 0};
    model m;
    model_init(&m, &cfg, 1);
    int state = m.n_param + 3 * m.n_bn;
    CHECK(m.n_params == expected[i].params, "%s width %g: %zu parameters, torchvision has %zu",
          expected[i].name, (double)expected[i].width, m.n_params, expected[i].params);
    CHECK(state == expected[i].state_dict, "%s width %g: %d state_dict entries, torchvision has %d",
          expected[i].name, (double)expected[i].width, state, expected[i].state_dict);
    printf("%s width %.2f: %zu parameters, %d state-dict entries, %.1f MMACs at 224\n",
           expected[i].name, (double)expected[i].width, m.n_params, state, model_macs(&m, 224) / 1e6);
    model_free(&m);
  }
  model_config cfg = {MODEL_MNV3_SMALL, 1.0f, 5, 0.2f, 0};
  model m;
  model_init(&m, &cfg, 1);
  CHECK(model_find_param(&m, "features.0.0.weight") && model_find_param(&m, "features.1.block.1.fc1.weight") &&
            model_find_param(&m, "classifier.3.bias") && model_find_param(&m, "features.12.1.weight"),
        "torchvision names missing");
  const param_info *stem = model_find_param(&m, "features.0.0.weight");
  CHECK(stem && stem->shape[0] == 16 && stem->shape[1] == 3 && stem->shape[2] == 3, "stem shape");
  model_free(&m);
}

static void fill_batch(float *x, int *labels, int n, int size, uint64_t seed) {
  for (size_t i = 0; i < (size_t)n * size * size * 3; i += 4) {
    float u[4];
    philox_uniform4(seed, (uint32_t)(i >> 32), (uint32_t)i, 7, u);
    for (int k = 0; k < 4 && i + k < (size_t)n * size * size * 3; k++) x[i + k] = 2 * u[k] - 1;
  }
  for (int b = 0; b < n; b++) labels[b] = b % 5;
}

static void test_training(const char *arch, opt_kind kind, float lr) {
  model_config cfg = {(model_arch)model_arch_parse(arch), 0.5f, 5, 0.2f, 0};
  model m;
  model_init(&m, &cfg, 42);
  int n = 8, size = 64;
  model_prepare(&m, n, size);
  float *x = xmalloc((size_t)n * size * size * 3 * sizeof(float));
  int labels[8];
  fill_batch(x, labels, n, size, 3);
  optim_config oc = optim_defaults(kind);
  optimizer o;
  optim_init(&o, &oc, &m);
  float first = 0, last = 0;
  int pool_after_first = 0;
  for (int step = 0; step < 25; step++) {
    m.dropout_seed = hash_mix(42, (uint64_t)step);
    model_zero_grads(&m);
    float loss = model_forward(&m, x, labels, n, 1, 0.0f);
    model_backward(&m, labels, n, 0.0f);
    optim_step(&o, m.params, m.grads, lr);
    CHECK(isfinite(loss), "%s: loss not finite at step %d", arch, step);
    if (step == 0) first = loss, pool_after_first = m.n_grad_pool;
    last = loss;
  }
  printf("%s/%s: loss %.4f -> %.4f over 25 steps on one batch\n", arch, optim_kind_name(kind), first, last);
  CHECK(last < 0.5f * first, "%s/%s: loss did not fall (%.4f -> %.4f)", arch, optim_kind_name(kind), first, last);
  CHECK(m.n_grad_pool == pool_after_first, "%s: gradient pool grew after the first step", arch);
  /* Eval is deterministic and leaves the running statistics alone. */
  float *logits = xmalloc(5 * (size_t)n * sizeof(float));
  uint64_t before = model_hash(&m);
  model_forward(&m, x, NULL, n, 0, 0.0f);
  memcpy(logits, model_logits(&m), 5 * (size_t)n * sizeof(float));
  model_forward(&m, x, NULL, n, 0, 0.0f);
  CHECK(!memcmp(logits, model_logits(&m), 5 * (size_t)n * sizeof(float)), "eval not deterministic");
  CHECK(model_hash(&m) == before, "eval changed the model");
  free(logits), free(x);
  optim_free(&o);
  model_free(&m);
}

static void test_optim_formulas(void) {
  /* One parameter tensor driven through each optimizer, compared with the formulas. */
  model_config cfg = {MODEL_MNV3_SMALL, 0.35f, 5, 0.2f, 0};
  model m;
  model_init(&m, &cfg, 1);
  size_t n = m.n_params;
  float *p = xmalloc(n * sizeof(float)), *g = xmalloc(n * sizeof(float));
  for (opt_kind k = OPT_SGD; k <= OPT_ADAMW; k++) {
    optim_config oc = optim_defaults(k);
    oc.decay_all = 1;
    oc.weight_decay = 0.1f;
    optimizer o;
    optim_init(&o, &oc, &m);
    double x = 0.5, mm = 0, v = 0;
    for (int step = 1; step <= 3; step++) {
      for (size_t i = 0; i < n; i++) p[i] = (float)x, g[i] = 0.25f * step;
      if (step == 1) for (size_t i = 0; i < n; i++) p[i] = 0.5f;
      double gr = 0.25 * step, lr = 0.01;
      switch (k) {
      case OPT_SGD: gr += 0.1 * x; mm = 0.9 * mm + gr; x -= lr * mm; break;
      case OPT_RMSPROP: gr += 0.1 * x; v = 0.9 * v + 0.1 * gr * gr; x -= lr * gr / sqrt(v + 1e-7); break;
      case OPT_ADAM:
      case OPT_ADAMW: {
        if (k == OPT_ADAMW) x *= 1 - lr * 0.1; else gr += 0.1 * x;
        mm = 0.9 * mm + 0.1 * gr, v = 0.999 * v + 0.001 * gr * gr;
        double mh = mm / (1 - pow(0.9, step)), vh = v / (1 - pow(0.999, step));
        x -= lr * mh / (sqrt(vh) + 1e-8);
        break;
      }
      }
      /* The optimizer sees the previous x (p was set to it above). */
      optim_step(&o, p, g, 0.01f);
      CHECK(fabs(p[0] - x) < 1e-5 && p[n - 1] == p[0], "%s step %d: %.7f vs %.7f", optim_kind_name(k), step, p[0], x);
    }
    optim_free(&o);
  }
  free(p), free(g);
  model_free(&m);

  lr_schedule s = {LR_COSINE, 1.0f, 10, 0, 0, 0.0f};
  CHECK(fabsf(lr_at(&s, 0, 110) - 0.1f) < 1e-6, "warm-up start");
  CHECK(fabsf(lr_at(&s, 9, 110) - 1.0f) < 1e-6, "warm-up end");
  CHECK(fabsf(lr_at(&s, 60, 110) - 0.5f) < 1e-6, "cosine middle");
  CHECK(lr_at(&s, 110, 110) < 1e-6, "cosine end");
  lr_schedule st = {LR_STEP, 1.0f, 0, 30, 0.1f, 0};
  CHECK(fabsf(lr_at(&st, 29, 100) - 1.0f) < 1e-6 && fabsf(lr_at(&st, 30, 100) - 0.1f) < 1e-6, "step schedule");
}

/* Backward that recomputes the conv+BN+act outputs gives the gradients of backward that reads
 * them kept, bit for bit, with less activation memory (where the device recomputes). */
static void test_recompute_matches_kept(const char *arch, float drop_path) {
  model_config cfg = {(model_arch)model_arch_parse(arch), 0.5f, 5, 0.2f, drop_path};
  model kept, recomputed;
  model_init(&kept, &cfg, 7);
  model_init(&recomputed, &cfg, 7);
  model_keep_activations(&kept, 1);
  int n = 4, size = 64;
  model_prepare(&kept, n, size);
  model_prepare(&recomputed, n, size);
  float *x = xmalloc((size_t)n * size * size * 3 * sizeof(float));
  int labels[4];
  fill_batch(x, labels, n, size, 11);
  model *both[2] = {&kept, &recomputed};
  for (int k = 0; k < 2; k++) {
    both[k]->dropout_seed = 5;
    model_zero_grads(both[k]);
    model_forward(both[k], x, labels, n, 1, 0.1f);
    model_backward(both[k], labels, n, 0.1f);
  }
  CHECK(!memcmp(kept.grads, recomputed.grads, sizeof(float) * kept.n_params), "%s: recomputed backward's gradients differ", arch);
  CHECK(model_activation_bytes(&recomputed) < model_activation_bytes(&kept), "%s: recomputing kept %zu bytes, keeping %zu", arch,
        model_activation_bytes(&recomputed), model_activation_bytes(&kept));
  free(x);
  model_free(&kept), model_free(&recomputed);
}

/* Whether any gradient of ADD layer a's branch (the layers after its block's input up to a)
 * is non-zero; and whether any gradient before the block is. */
static void branch_gradients(const model *m, int a, int *branch_nonzero, int *before_nonzero) {
  const layer *add = &m->layers[a];
  int first = a - 1;
  while (m->layers[first].in != add->skip) first--;
  /* Parameters are laid out in layer order; the branch ends with its projection's BN beta. */
  const layer *projection = &m->layers[a - 1];
  size_t lo = m->layers[first].weight, end = projection->beta + (size_t)projection->cout;
  *branch_nonzero = *before_nonzero = 0;
  for (size_t i = 0; i < m->n_params; i++) {
    if (m->grads[i] == 0.0f) continue;
    if (i >= lo && i < end) *branch_nonzero = 1;
    if (i < lo) *before_nonzero = 1;
  }
}

/* Stochastic depth changes training only: evaluation is the plain network's; a training
 * forward depends on the step's seed; and with one image (so BN couples no samples) a block
 * whose branch the mask drops gets exactly zero gradients while the layers before it still
 * learn through the skip, and a kept branch gets gradients. */
static void test_drop_path(void) {
  model_config plain_cfg = {MODEL_MNV3_SMALL, 0.5f, 5, 0.0f, 0}, cfg = plain_cfg;
  cfg.drop_path = 0.8f;
  model plain, m;
  model_init(&plain, &plain_cfg, 9);
  model_init(&m, &cfg, 9);
  int n = 8, size = 48, labels[8];
  model_prepare(&plain, n, size);
  model_prepare(&m, n, size);
  float *x = xmalloc((size_t)n * size * size * 3 * sizeof(float));
  fill_batch(x, labels, n, size, 13);
  model_forward(&plain, x, NULL, n, 0, 0.0f);
  model_forward(&m, x, NULL, n, 0, 0.0f);
  CHECK(!memcmp(model_logits(&plain), model_logits(&m), 5 * (size_t)n * sizeof(float)),
        "stochastic depth changed evaluation");
  plain.dropout_seed = m.dropout_seed = 3;
  float plain_loss = model_forward(&plain, x, labels, n, 1, 0.0f);
  float loss = model_forward(&m, x, labels, n, 1, 0.0f);
  float again = model_forward(&m, x, labels, n, 1, 0.0f);
  m.dropout_seed = 4;
  float other = model_forward(&m, x, labels, n, 1, 0.0f);
  CHECK(loss != plain_loss && loss == again && other != loss,
        "training loss: plain %.6f, seed 3 %.6f then %.6f, seed 4 %.6f", plain_loss, loss, again, other);

  int dropped_seen = 0, kept_seen = 0;
  for (uint64_t seed = 1; seed <= 12; seed++) {
    m.dropout_seed = seed;
    model_zero_grads(&m);
    model_forward(&m, x, labels, 1, 1, 0.0f);
    model_backward(&m, labels, 1, 0.0f);
    for (int a = 0; a < m.n_layers; a++) {
      const layer *l = &m.layers[a];
      if (l->kind != LAYER_ADD || l->drop_path <= 0.0f) continue;
      /* model.c's mask key for ADD layer a: the step's seed mixed with the layer's index */
      int dropped = drop_path_scale(0, l->drop_path, hash_mix(seed, (uint64_t)a)) == 0.0f;
      int branch, before;
      branch_gradients(&m, a, &branch, &before);
      CHECK(branch == !dropped && before, "seed %llu, layer %d (rate %.3f): dropped %d, branch gradients %d, earlier %d",
            (unsigned long long)seed, a, (double)l->drop_path, dropped, branch, before);
      dropped_seen += dropped, kept_seen += !dropped;
    }
  }
  CHECK(dropped_seen > 0 && kept_seen > 0, "branches dropped %d, kept %d", dropped_seen, kept_seen);
  printf("stochastic depth: evaluation unchanged; %d dropped branches got no gradient, %d kept ones did\n",
         dropped_seen, kept_seen);
  free(x);
  model_free(&plain), model_free(&m);
}

int main(void) {
  threads_set(0);
  test_counts();
  test_optim_formulas();
  test_training("mnv3-small", OPT_SGD, 0.05f);
  test_training("mnv3-large", OPT_ADAM, 0.002f);
  test_training("mnv2", OPT_RMSPROP, 0.001f);
  test_recompute_matches_kept("mnv3-small", 0.0f);
  test_recompute_matches_kept("mnv3-large", 0.0f);
  test_recompute_matches_kept("mnv2", 0.5f);
  test_drop_path();
    return check_status();
}
