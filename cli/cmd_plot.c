/* cmd_plot.c - `pollen plot`: the loss and accuracy curves of a job's metrics.jsonl as an
 * SVG file (two panels: training loss; training and validation accuracy) that any browser
 * shows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"
#include "proto/metrics.h"

typedef struct {
  double *x, *y;
  int n, cap;
} series;

static void push(series *s, double x, double y) {
  if (!isfinite(y)) return;
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 256;
    s->x = xrealloc(s->x, (size_t)s->cap * sizeof *s->x);
    s->y = xrealloc(s->y, (size_t)s->cap * sizeof *s->y);
  }
  s->x[s->n] = x, s->y[s->n] = y, s->n++;
}

typedef struct {
  series loss, train_acc, val_acc;
  double xmax;
} curves;

static void add_record(const metrics_record *r, void *ctx) {
  curves *c = ctx;
  double step = (double)r->step;
  push(&c->loss, step, r->loss);
  push(&c->train_acc, step, r->train_acc);
  push(&c->val_acc, step, r->val_acc);
  if (step > c->xmax) c->xmax = step;
}

/* One panel at (px, py) of size w x h with its own y range. */
static void panel(FILE *f, int px, int py, int w, int h, double xmax, double ymin, double ymax,
                  const char *title, const series *s, const char *const *colors, const char *const *labels, int n) {
  fprintf(f, "<g transform=\"translate(%d,%d)\">\n", px, py);
  fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", w, h);
  fprintf(f, "<text x=\"%d\" y=\"-8\" font-size=\"14\" text-anchor=\"middle\">%s</text>\n", w / 2, title);
  for (int t = 0; t <= 4; t++) {
    double v = ymin + (ymax - ymin) * t / 4, y = h - (double)h * t / 4;
    fprintf(f, "<line x1=\"0\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", w, y, y);
    fprintf(f, "<text x=\"-6\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.3g</text>\n", y + 4, v);
    double xv = xmax * t / 4, x = (double)w * t / 4;
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.0f</text>\n", x, h + 16, xv);
  }
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">step</text>\n", w / 2, h + 32);
  for (int k = 0; k < n; k++) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colors[k]);
    for (int i = 0; i < s[k].n; i++)
      fprintf(f, "%.1f,%.1f ", w * s[k].x[i] / xmax, h - h * (s[k].y[i] - ymin) / (ymax - ymin));
    fprintf(f, "\"/>\n");
    if (s[k].n == 1 || k > 0)
      for (int i = 0; i < s[k].n; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", w * s[k].x[i] / xmax,
                h - h * (s[k].y[i] - ymin) / (ymax - ymin), colors[k]);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\" text-anchor=\"end\">%s</text>\n", w - 8, 18 + 16 * k,
            colors[k], labels[k]);
  }
  fprintf(f, "</g>\n");
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen plot --job DIR [--out FILE.svg]\n\n"
          "Draws the job's training loss and training/validation accuracy from\n"
          "JOB/metrics.jsonl into an SVG file (default JOB/curves.svg).\n\n"
          "  --job DIR     the job folder\n"
          "  --out FILE    the SVG to write (default JOB/curves.svg)\n"
          "  --help\n");
}

int cmd_plot(int argc, char **argv) {
  static const struct option opts[] = {{"job", required_argument, 0, 'j'},
                                       {"out", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *job = NULL, *out = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': job = optarg; break;
    case 'o': out = optarg; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("plot");
    }
  }
  if (optind < argc || !job) {
    fprintf(stderr, "pollen plot: --job DIR is required; see 'pollen plot --help'\n");
    return EXIT_USAGE;
  }
  char path[4200], outbuf[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", job);
  if (!out) snprintf(outbuf, sizeof outbuf, "%s/curves.svg", job), out = outbuf;
  FILE *in = fopen(path, "r");
  if (!in) die("%s has no metrics.jsonl yet; train first (pollen train --job %s)", job, job);
  curves plot = {.xmax = 1};
  metrics_tally tally;
  char err[512];
  int rc = metrics_read(in, 0, add_record, &plot, &tally, err, sizeof err);
  fclose(in);
  if (rc != 0) die("%s: %s", path, err);
  if (tally.skipped) /* a line cut by a crash */
    log_warn("%s: skipped %lld malformed line(s) of %lld", path, (long long)tally.skipped, (long long)tally.lines);
  if (plot.loss.n == 0 && plot.val_acc.n == 0) die("%s holds no metrics yet; let the job log a few steps", path);
  double lmax = 0;
  for (int i = 0; i < plot.loss.n; i++) lmax = fmax(lmax, plot.loss.y[i]);
  if (lmax <= 0) lmax = 1;
  FILE *f = fopen(out, "w");
  if (!f) die("cannot write %s; check the path", out);
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"980\" height=\"380\" font-family=\"sans-serif\">\n");
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  const char *lc[] = {"#1f77b4"}, *ll[] = {"training loss"};
  panel(f, 60, 40, 400, 280, plot.xmax, 0, lmax * 1.05, "loss", &plot.loss, lc, ll, 1);
  series acc[2] = {plot.train_acc, plot.val_acc};
  const char *ac[] = {"#ff7f0e", "#2ca02c"}, *al[] = {"training accuracy", "validation accuracy"};
  panel(f, 540, 40, 400, 280, plot.xmax, 0, 1, "accuracy", acc, ac, al, 2);
  fprintf(f, "</svg>\n");
  if (fclose(f) != 0) die("cannot write %s", out);
  printf("wrote %s (%d loss points, %d validation points)\n", out, plot.loss.n, plot.val_acc.n);
  free(plot.loss.x), free(plot.loss.y), free(plot.train_acc.x), free(plot.train_acc.y), free(plot.val_acc.x), free(plot.val_acc.y);
  return EXIT_OK;
}
