/* tta.c - test-time augmentation shared by `pollen eval` and `pollen predict`: the sizes an
 * image is scored at (--size S[,S...]), --tta flip, and the mirrored images. */
#include <stdio.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"

int cli_parse_sizes(const char *text, int sizes[CLI_MAX_SIZES]) {
  int n = 0;
  for (const char *p = text;; p++) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char one[16];
    if (len == 0 || len >= sizeof one)
      die_status(EXIT_USAGE, "--size: '%s' is not a size or a comma-separated list of sizes", text);
    if (n == CLI_MAX_SIZES) die_status(EXIT_USAGE, "--size: at most %d sizes, got '%s'", CLI_MAX_SIZES, text);
    memcpy(one, p, len), one[len] = 0;
    sizes[n++] = (int)cli_parse_long("--size", one, 32, 1024);
    if (!end) return n;
    p = end;
  }
}

int cli_parse_tta(const char *text) {
  if (strcmp(text, "flip") && strcmp(text, "none")) die_status(EXIT_USAGE, "--tta: '%s' is not flip or none", text);
  return !strcmp(text, "flip");
}

void cli_mirror_images(float *images, int n, int size) {
  for (int b = 0; b < n; b++)
    for (int y = 0; y < size; y++) {
      float *row = images + ((size_t)b * size + y) * size * 3;
      for (int x = 0; x < size / 2; x++)
        for (int c = 0; c < 3; c++) {
          float t = row[x * 3 + c];
          row[x * 3 + c] = row[(size - 1 - x) * 3 + c], row[(size - 1 - x) * 3 + c] = t;
        }
    }
}

const char *cli_sizes_text(const int *sizes, int n, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int i = 0; i < n && used < cap; i++) used += (size_t)snprintf(out + used, cap - used, "%s%d", i ? "+" : "", sizes[i]);
  return out;
}
