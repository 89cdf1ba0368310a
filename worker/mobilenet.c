/* mobilenet.c - the three architectures, exactly as torchvision 0.14 defines them
 * (torchvision/models/mobilenetv3.py and mobilenetv2.py): block tables, channel rounding,
 * SE widths, activations and module names. */
#include <stdio.h>

#include "base/core.h"
#include "worker/model_build.h"

int make_divisible(double v, int divisor) {
  int new_v = (int)(v + divisor / 2.0) / divisor * divisor;
  if (new_v < divisor) new_v = divisor;
  if (new_v < 0.9 * v) new_v += divisor; /* never round down by more than 10% */
  return new_v;
}

typedef struct {
  int in, k, exp, out, se, hs, stride;
} v3_block;

static const v3_block v3_small[] = {
    {16, 3, 16, 16, 1, 0, 2},   {16, 3, 72, 24, 0, 0, 2},   {24, 3, 88, 24, 0, 0, 1},
    {24, 5, 96, 40, 1, 1, 2},   {40, 5, 240, 40, 1, 1, 1},  {40, 5, 240, 40, 1, 1, 1},
    {40, 5, 120, 48, 1, 1, 1},  {48, 5, 144, 48, 1, 1, 1},  {48, 5, 288, 96, 1, 1, 2},
    {96, 5, 576, 96, 1, 1, 1},  {96, 5, 576, 96, 1, 1, 1},
};
static const v3_block v3_large[] = {
    {16, 3, 16, 16, 0, 0, 1},    {16, 3, 64, 24, 0, 0, 2},    {24, 3, 72, 24, 0, 0, 1},
    {24, 5, 72, 40, 1, 0, 2},    {40, 5, 120, 40, 1, 0, 1},   {40, 5, 120, 40, 1, 0, 1},
    {40, 3, 240, 80, 0, 1, 2},   {80, 3, 200, 80, 0, 1, 1},   {80, 3, 184, 80, 0, 1, 1},
    {80, 3, 184, 80, 0, 1, 1},   {80, 3, 480, 112, 1, 1, 1},  {112, 3, 672, 112, 1, 1, 1},
    {112, 5, 672, 160, 1, 1, 2}, {160, 5, 960, 160, 1, 1, 1}, {160, 5, 960, 160, 1, 1, 1},
};

/* Stochastic depth grows linearly with depth, from 0 at the first block (torchvision's
 * EfficientNet: stochastic_depth_prob * block_id / total_blocks). */
static float block_drop_path(const model *m, int block, int blocks) {
  return m->cfg.drop_path * (float)block / (float)blocks;
}

static void build_v3(model *m, const v3_block *table, int n_blocks, int last_channel) {
  double wm = m->cfg.width;
  char a[96], b[96];
  int first = make_divisible(table[0].in * wm, 8);
  int t = build_conv_bn_act(m, "features.0.0", "features.0.1", 0, 3, first, 3, 2, CONV_FULL,
                            ACT_HARDSWISH);
  for (int i = 0; i < n_blocks; i++) {
    const v3_block *c = &table[i];
    int cin = make_divisible(c->in * wm, 8), exp = make_divisible(c->exp * wm, 8);
    int cout = make_divisible(c->out * wm, 8);
    act_kind act = c->hs ? ACT_HARDSWISH : ACT_RELU;
    int block_in = t, j = 0;
    if (exp != cin) {
      snprintf(a, sizeof a, "features.%d.block.%d.0", i + 1, j);
      snprintf(b, sizeof b, "features.%d.block.%d.1", i + 1, j);
      t = build_conv_bn_act(m, a, b, t, cin, exp, 1, 1, CONV_POINTWISE, act);
      j++;
    }
    snprintf(a, sizeof a, "features.%d.block.%d.0", i + 1, j);
    snprintf(b, sizeof b, "features.%d.block.%d.1", i + 1, j);
    t = build_conv_bn_act(m, a, b, t, exp, exp, c->k, c->stride, CONV_DEPTHWISE, act);
    j++;
    if (c->se) {
      snprintf(a, sizeof a, "features.%d.block.%d", i + 1, j);
      t = build_se(m, a, t, exp, make_divisible(exp / 4, 8));
      j++;
    }
    snprintf(a, sizeof a, "features.%d.block.%d.0", i + 1, j);
    snprintf(b, sizeof b, "features.%d.block.%d.1", i + 1, j);
    t = build_conv_bn_act(m, a, b, t, exp, cout, 1, 1, CONV_POINTWISE, ACT_NONE);
    if (c->stride == 1 && cin == cout) t = build_add(m, t, block_in, block_drop_path(m, i, n_blocks));
  }
  int last_in = build_channels(m, t), last_out = 6 * last_in;
  snprintf(a, sizeof a, "features.%d.0", n_blocks + 1);
  snprintf(b, sizeof b, "features.%d.1", n_blocks + 1);
  t = build_conv_bn_act(m, a, b, t, last_in, last_out, 1, 1, CONV_POINTWISE, ACT_HARDSWISH);
  t = build_pool(m, t);
  int hidden = make_divisible(last_channel * wm, 8);
  t = build_linear(m, "classifier.0", t, last_out, hidden, ACT_HARDSWISH);
  t = build_dropout(m, t);
  build_linear(m, "classifier.3", t, hidden, m->cfg.num_classes, ACT_NONE);
}

static void build_v2(model *m) {
  static const int setting[][4] = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                   {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
  double wm = m->cfg.width;
  char a[96], b[96];
  int cin = make_divisible(32 * wm, 8);
  int last = make_divisible(1280 * (wm > 1.0 ? wm : 1.0), 8);
  int t = build_conv_bn_act(m, "features.0.0", "features.0.1", 0, 3, cin, 3, 2, CONV_FULL,
                            ACT_RELU6);
  int index = 1, blocks = 0;
  for (int s = 0; s < 7; s++) blocks += setting[s][2];
  for (int s = 0; s < 7; s++) {
    int expand = setting[s][0], cout = make_divisible(setting[s][1] * wm, 8);
    for (int r = 0; r < setting[s][2]; r++, index++) {
      int stride = r == 0 ? setting[s][3] : 1;
      int hidden = (int)(cin * expand + 0.5), block_in = t, j = 0;
      if (expand != 1) {
        snprintf(a, sizeof a, "features.%d.conv.0.0", index);
        snprintf(b, sizeof b, "features.%d.conv.0.1", index);
        t = build_conv_bn_act(m, a, b, t, cin, hidden, 1, 1, CONV_POINTWISE, ACT_RELU6);
        j++;
      }
      snprintf(a, sizeof a, "features.%d.conv.%d.0", index, j);
      snprintf(b, sizeof b, "features.%d.conv.%d.1", index, j);
      t = build_conv_bn_act(m, a, b, t, hidden, hidden, 3, stride, CONV_DEPTHWISE, ACT_RELU6);
      j++;
      /* The projection is a bare Conv2d then BatchNorm2d: two sibling modules. */
      snprintf(a, sizeof a, "features.%d.conv.%d", index, j);
      snprintf(b, sizeof b, "features.%d.conv.%d", index, j + 1);
      t = build_conv_bn_act(m, a, b, t, hidden, cout, 1, 1, CONV_POINTWISE, ACT_NONE);
      if (stride == 1 && cin == cout) t = build_add(m, t, block_in, block_drop_path(m, index - 1, blocks));
      cin = cout;
    }
  }
  snprintf(a, sizeof a, "features.%d.0", index);
  snprintf(b, sizeof b, "features.%d.1", index);
  t = build_conv_bn_act(m, a, b, t, cin, last, 1, 1, CONV_POINTWISE, ACT_RELU6);
  t = build_pool(m, t);
  t = build_dropout(m, t);
  build_linear(m, "classifier.1", t, last, m->cfg.num_classes, ACT_NONE);
}

void mobilenet_build(model *m) {
  switch (m->cfg.arch) {
  case MODEL_MNV3_SMALL:
    m->bn_eps = 0.001f, m->bn_momentum = 0.01f;
    build_v3(m, v3_small, (int)(sizeof v3_small / sizeof v3_small[0]), 1024);
    break;
  case MODEL_MNV3_LARGE:
    m->bn_eps = 0.001f, m->bn_momentum = 0.01f;
    build_v3(m, v3_large, (int)(sizeof v3_large / sizeof v3_large[0]), 1280);
    break;
  case MODEL_MNV2:
    m->bn_eps = 1e-5f, m->bn_momentum = 0.1f;
    build_v2(m);
    break;
  }
}
