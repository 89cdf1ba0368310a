/* test_safetensors.c - safetensors round trip, and malformed files rejected with a one-line
 * error (never a crash): truncation, bad header length, bad JSON, bad offsets, overlap, wrong
 * sizes, huge shapes, plus random corruption. Reads the Python-made references when present. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/safetensors.h"
#include "tests/check.h"


/* Builds a file image: 8-byte length, header, data. */
static uint8_t *image(const char *hdr, const void *data, size_t dn, size_t *size) {
  size_t hl = strlen(hdr);
  *size = 8 + hl + dn;
  uint8_t *b = malloc(*size + 1);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(b + 8, hdr, hl);
  if (dn) memcpy(b + 8 + hl, data, dn);
  return b;
}

/* Expects the header + data to be rejected with a message containing `want`. */
static void reject(const char *what, const char *hdr, size_t dn, const char *want) {
  uint8_t data[256] = {0};
  size_t size;
  uint8_t *b = image(hdr, data, dn, &size);
  char err[512] = "";
  st_file *f = st_parse(b, size, "bad.safetensors", err, sizeof err);
  if (f || !strstr(err, "bad.safetensors") || !strstr(err, want) || strchr(err, '\n')) {
    fprintf(stderr, "FAIL reject %s: %s (err: '%s', want '%s')\n", what, f ? "accepted" : "wrong message", err, want);
    check_failures++;
  }
  st_close(f);
  free(b);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void test_round_trip(const char *dir, uint8_t **img, size_t *img_size) {
  float a[6] = {1.5f, -2.25f, 3.0f, 1e-30f, -0.0f, 12345.678f};
  int64_t lab[4] = {0, 4, -7, INT64_MAX};
  float s = 0.125f;
  int64_t sa[2] = {2, 3}, sl[1] = {4}, sz[2] = {0, 5};
  st_writer *w = st_writer_new();
  st_writer_add_f32(w, "features.0.0.weight", 2, sa, a);
  st_writer_add_i64(w, "labels", 1, sl, lab);
  st_writer_add_f32(w, "loss", 0, NULL, &s);
  st_writer_add_f32(w, "empty", 2, sz, NULL);
  st_writer_meta(w, "model", "mnv3-small");
  st_writer_meta(w, "seed", "1");
  st_writer_meta(w, "seed", "7"); /* replaces */
  char path[512];
  snprintf(path, sizeof path, "%s/rt.safetensors", dir);
  char err[512] = "";
  CHECK(st_writer_save(w, path, err, sizeof err) == 0);
  st_writer_free(w);

  /* Atomic write leaves exactly one file behind, no temporary. */
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  CHECK(n == 1);

  st_file *f = st_open(path, err, sizeof err);
  CHECK(f != NULL);
  if (!f) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  CHECK(f->n_tensors == 4);
  const st_tensor *t = st_find(f, "features.0.0.weight");
  CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
        t->numel == 6 && t->nbytes == 24);
  CHECK(t && memcmp(t->data, a, sizeof a) == 0);
  CHECK(t && ((uintptr_t)t->data % 4) == 0);
  float back[6];
  CHECK(t && st_copy_f32(t, back, 6) == 0 && memcmp(back, a, sizeof a) == 0);
  int64_t iback[6];
  CHECK(t && st_copy_i64(t, iback, 6) == -1);
  t = st_find(f, "labels");
  CHECK(t && t->dtype == ST_I64 && t->ndim == 1 && t->shape[0] == 4);
  CHECK(t && st_copy_i64(t, iback, 4) == 0 && memcmp(iback, lab, sizeof lab) == 0);
  t = st_find(f, "loss");
  CHECK(t && t->ndim == 0 && t->numel == 1 && *(const float *)t->data == 0.125f);
  t = st_find(f, "empty");
  CHECK(t && t->numel == 0 && t->nbytes == 0 && t->shape[1] == 5);
  CHECK(st_find(f, "nope") == NULL);
  CHECK(st_meta(f, "model") && !strcmp(st_meta(f, "model"), "mnv3-small"));
  CHECK(st_meta(f, "seed") && !strcmp(st_meta(f, "seed"), "7"));
  CHECK(st_meta(f, "nope") == NULL);
  int64_t want_shape[2] = {2, 3};
  CHECK(st_expect(f, "features.0.0.weight", ST_F32, 2, want_shape) != NULL);
  st_close(f);

  FILE *fp = fopen(path, "rb");
  fseek(fp, 0, SEEK_END);
  *img_size = (size_t)ftell(fp);
  rewind(fp);
  *img = malloc(*img_size);
  CHECK(fread(*img, 1, *img_size, fp) == *img_size);
  fclose(fp);
  CHECK((*img)[0] % 8 == 0); /* header padded: data 8-aligned in the file too */
}

static void test_malformed(const uint8_t *img, size_t size) {
  char err[512];
  /* Every truncation of a valid file is rejected (the tensors must reach the end). */
  for (size_t n = 0; n < size; n++) {
    err[0] = 0;
    st_file *f = st_parse(img, n, "cut.safetensors", err, sizeof err);
    if (f || !strstr(err, "cut.safetensors")) {
      fprintf(stderr, "FAIL truncated to %zu of %zu bytes: %s\n", n, size, f ? "accepted" : err);
      check_failures++;
    }
    st_close(f);
  }
  /* Header length larger than the file, and absurdly large. */
  uint8_t *b = malloc(size);
  memcpy(b, img, size);
  uint64_t big[2] = {size - 7, UINT64_MAX};
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(big[k] >> (8 * i));
    st_file *f = st_parse(b, size, "big.safetensors", err, sizeof err);
    CHECK(!f && strstr(err, "header length"));
    st_close(f);
  }
  free(b);

  const char *T = "\"dtype\":\"F32\",\"shape\":";
  char h[1024];
  reject("bad JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4, "not valid JSON");
  reject("not an object", "[1,2,3]", 0, "not a JSON object");
  reject("junk after JSON", "{}xx", 0, "junk");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[0,16]}}", T);
  reject("offsets out of bounds", h, 8, "data_offsets");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[8,0]}}", T);
  reject("offsets reversed", h, 8, "data_offsets");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[0,8]},\"b\":{%s[2],\"data_offsets\":[4,12]}}", T, T);
  reject("overlapping", h, 12, "overlaps");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[0,8]},\"b\":{%s[2],\"data_offsets\":[0,8]}}", T, T);
  reject("same bytes twice", h, 8, "overlaps");
  snprintf(h, sizeof h, "{\"a\":{%s[1],\"data_offsets\":[4,8]}}", T);
  reject("gap", h, 8, "gap");
  snprintf(h, sizeof h, "{\"a\":{%s[1],\"data_offsets\":[0,4]}}", T);
  reject("trailing bytes", h, 8, "after the last tensor");
  snprintf(h, sizeof h, "{\"a\":{%s[3],\"data_offsets\":[0,8]}}", T);
  reject("wrong dtype size", h, 8, "needs 12");
  reject("I64 size", "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "needs 16");
  snprintf(h, sizeof h, "{\"a\":{%s[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", T);
  reject("huge shape", h, 8, "shape");
  snprintf(h, sizeof h, "{\"a\":{%s[1e300],\"data_offsets\":[0,8]}}", T);
  reject("1e300 dimension", h, 8, "shape");
  snprintf(h, sizeof h, "{\"a\":{%s[4611686018427387904],\"data_offsets\":[0,8]}}", T);
  reject("2^62 elements", h, 8, "shape");
  snprintf(h, sizeof h, "{\"a\":{%s[-2],\"data_offsets\":[0,8]}}", T);
  reject("negative dimension", h, 8, "shape");
  snprintf(h, sizeof h, "{\"a\":{%s[1.5],\"data_offsets\":[0,8]}}", T);
  reject("fractional dimension", h, 8, "shape");
  snprintf(h, sizeof h, "{\"a\":{%s[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", T);
  reject("rank 9", h, 8, "dimensions");
  snprintf(h, sizeof h, "{\"a\":{%s2,\"data_offsets\":[0,8]}}", T);
  reject("shape not array", h, 8, "dimensions");
  reject("unknown dtype", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
  reject("dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
  reject("missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "lacks data_offsets");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[0,8],\"x\":1}}", T);
  reject("unknown key", h, 8, "unknown key");
  snprintf(h, sizeof h, "{\"a\":{%s[2],\"data_offsets\":[0,8]},\"a\":{%s[2],\"data_offsets\":[0,8]}}", T, T);
  reject("duplicate name", h, 8, "twice");
  snprintf(h, sizeof h, "{\"__metadata__\":{\"k\":1},\"a\":{%s[2],\"data_offsets\":[0,8]}}", T);
  reject("metadata not string", h, 8, "__metadata__");
  reject("entry not object", "{\"a\":3}", 0, "not a JSON object");
  snprintf(h, sizeof h, "{\"a\\u0000b\":{%s[2],\"data_offsets\":[0,8]}}", T);
  reject("escaped NUL in name", h, 8, "NUL");
  snprintf(h, sizeof h, "{\"\":{%s[2],\"data_offsets\":[0,8]}}", T);
  reject("empty name", h, 8, "name");
  /* A literal NUL inside the header. */
  {
    size_t sz;
    uint8_t *x = image("{\"a\"  :{}}", NULL, 0, &sz);
    x[12] = 0;
    st_file *f = st_parse(x, sz, "nul.safetensors", err, sizeof err);
    CHECK(!f && strstr(err, "NUL"));
    st_close(f);
    free(x);
  }
  /* The smallest valid file: no tensors. */
  {
    size_t sz;
    uint8_t *x = image("{}", NULL, 0, &sz);
    st_file *f = st_parse(x, sz, "empty.safetensors", err, sizeof err);
    CHECK(f && f->n_tensors == 0);
    st_close(f);
    free(x);
  }
}

/* Random corruption: each mutant either parses into tensors that lie inside the file, or is
 * rejected with a message; ASan turns any stray access into a failure. */
static void test_fuzz(const uint8_t *img, size_t size) {
  uint8_t *b = malloc(size + 64);
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(b, img, size);
    size_t n = size;
    int flips = 1 + (int)(next_rand() % 4);
    for (int k = 0; k < flips; k++) {
      size_t at = next_rand() % n;
      switch (next_rand() % 3) {
      case 0: b[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;
      case 1: b[at] = "{}[]\",:0123456789e-. \\"[next_rand() % 22]; break;
      default: n = at + 1; break;
      }
    }
    char err[512] = "";
    st_file *f = st_parse(b, n, "fuzz.safetensors", err, sizeof err);
    if (f) {
      accepted++;
      for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        volatile uint8_t sum = 0;
        for (size_t j = 0; j < t->nbytes; j++) sum += ((const uint8_t *)t->data)[j];
        (void)sum;
      }
    } else {
      rejected++;
      CHECK(err[0] && strstr(err, "fuzz.safetensors"));
    }
    st_close(f);
  }
  CHECK(rejected > 0);
  printf("fuzz: %d mutants accepted, %d rejected\n", accepted, rejected);
  free(b);
}

static void test_half(void) {
  uint16_t h[5] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555};
  float want[5] = {1.0f, -2.0f, 65504.0f, 5.9604645e-8f, 0.33325195f};
  st_tensor t = {.name = "h", .dtype = ST_F16, .ndim = 1, .shape = {5}, .numel = 5, .nbytes = 10, .data = h};
  float got[5];
  CHECK(st_copy_f32(&t, got, 5) == 0);
  for (int i = 0; i < 5; i++) CHECK(got[i] == want[i]);
  uint16_t bf[2] = {0x3F80, 0xC0A0};
  t.dtype = ST_BF16;
  t.numel = 2;
  t.shape[0] = 2;
  t.data = bf;
  CHECK(st_copy_f32(&t, got, 2) == 0 && got[0] == 1.0f && got[1] == -5.0f);
}

/* st_open_or_die exits with one line and status 1, it does not crash. */
static void test_die(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/garbage.safetensors", dir);
  FILE *fp = fopen(path, "wb");
  fputs("this is not a safetensors file at all", fp);
  fclose(fp);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    st_open_or_die(path);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == EXIT_FAILED);
  char err[512] = "";
  CHECK(st_open(path, err, sizeof err) == NULL && strstr(err, "header length"));
  CHECK(st_open("/nonexistent/x.safetensors", err, sizeof err) == NULL && strstr(err, "cannot open"));
  CHECK(st_open(dir, err, sizeof err) == NULL && strstr(err, "not a regular file"));
  unlink(path);
}

/* The committed PyTorch references (tools/make_reference.py) parse and agree with their own
 * metadata: a cross-check of two independent writers against this reader. */
static void test_references(void) {
  DIR *d = opendir("tests/ref");
  if (!d) {
    printf("no tests/ref directory; reference files not checked\n");
    return;
  }
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t l = strlen(e->d_name);
    if (l < 12 || strcmp(e->d_name + l - 12,".safetensors")) continue;
    char path[600];
    snprintf(path, sizeof path, "tests/ref/%s", e->d_name);
    char err[512];
    st_file *f = st_open(path, err, sizeof err);
    CHECK(f != NULL);
    if (!f) {
      fprintf(stderr, "%s\n", err);
      continue;
    }
    n++;
    const char *bs = st_meta(f, "batch"), *ss = st_meta(f, "size"), *cs = st_meta(f, "classes");
    CHECK(bs && ss && cs && st_meta(f, "model") && st_meta(f, "torch_version"));
    if (!bs || !ss || !cs) {
      st_close(f);
      continue;
    }
    int64_t B = atoll(bs), S = atoll(ss), K = atoll(cs);
    const st_tensor *in = st_find(f, "input"), *lo = st_find(f, "logits"), *lb = st_find(f, "labels");
    CHECK(in && in->dtype == ST_F32 && in->ndim == 4 && in->shape[0] == B && in->shape[1] == 3 &&
          in->shape[2] == S && in->shape[3] == S);
    CHECK(lo && lo->dtype == ST_F32 && lo->ndim == 2 && lo->shape[0] == B && lo->shape[1] == K);
    CHECK(lb && lb->dtype == ST_I64 && lb->numel == (uint64_t)B);
    int64_t labels[64];
    if (lb && B <= 64 && st_copy_i64(lb, labels, (size_t)B) == 0)
      for (int64_t i = 0; i < B; i++) CHECK(labels[i] >= 0 && labels[i] < K);
    /* Every parameter has its gradient beside it, same shape. */
    int grads = 0;
    for (int i = 0; i < f->n_tensors; i++) {
      const char *nm = f->tensors[i].name;
      if (strncmp(nm, "grad.", 5)) continue;
      const st_tensor *p = st_find(f, nm + 5);
      CHECK(p && p->numel == f->tensors[i].numel);
      grads++;
    }
    const char *lean = st_meta(f, "lean"), *steps = st_meta(f, "steps");
    CHECK(lean && steps);
    if (lean && !strcmp(lean, "0")) CHECK(grads > 0);
    if (steps && atoi(steps) > 0) {
      const st_tensor *ls = st_find(f, "loss_seq");
      CHECK(ls && ls->dtype == ST_F32 && ls->ndim == 1 && ls->shape[0] == atoi(steps) && st_meta(f, "opt"));
    }
    st_close(f);
  }
  closedir(d);
  printf("%d reference files checked\n", n);
}

int main(void) {
  char dir[] = "/tmp/pollen_st_XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  uint8_t *img = NULL;
  size_t size = 0;
  test_round_trip(dir, &img, &size);
  if (img) {
    test_malformed(img, size);
    test_fuzz(img, size);
  }
  test_half();
  test_die(dir);
  test_references();
  free(img);
  char path[600];
  snprintf(path, sizeof path, "%s/rt.safetensors", dir);
  unlink(path);
  rmdir(dir);
  if (check_failures) {
    fprintf(stderr, "%d failures\n", check_failures);
    return 1;
  }
  printf("safetensors: all checks passed\n");
  return 0;
}
