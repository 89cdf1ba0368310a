/* test_data_formats.c - CRC32C vectors, shard write/read and its corruption checks, TFRecord
 * framing against the Python-made fixture, the manifest's write/read, and the epoch shuffle /
 * rank slice. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/crc32c.h"
#include "proto/manifest.h"
#include "proto/plan.h"
#include "proto/shard.h"
#include "proto/tfrecord.h"
#include "tests/check.h"


static void test_crc(void) {
  unsigned char buf[64];
  CHECK(crc32c_update(0, "123456789", 9) == 0xE3069283u, "check value");
  memset(buf, 0, 32);
  CHECK(crc32c_update(0, buf, 32) == 0x8A9136AAu, "32 zeros (RFC 3720)");
  memset(buf, 0xFF, 32);
  CHECK(crc32c_update(0, buf, 32) == 0x62A8AB43u, "32 x 0xFF (RFC 3720)");
  for (int i = 0; i < 32; i++) buf[i] = (unsigned char)i;
  CHECK(crc32c_update(0, buf, 32) == 0x46DD794Eu, "0..31 (RFC 3720)");
  CHECK(crc32c_update(0, "", 0) == 0, "empty");
  /* Incremental == one shot, and hardware == table at every length and alignment. */
  unsigned char big[1000];
  for (int i = 0; i < 1000; i++) big[i] = (unsigned char)(i * 7 + 3);
  uint32_t whole = crc32c_update(0, big, 1000);
  CHECK(crc32c_update(crc32c_update(0, big, 333), big + 333, 667) == whole, "incremental");
  for (int off = 0; off < 9; off++)
    for (int n = 0; n < 70; n++)
      CHECK(crc32c_update(0, big + off, (size_t)n) == crc32c_update_sw(0, big + off, (size_t)n), "hw vs sw off %d n %d", off, n);
  printf("crc32c: hardware path %s\n", crc32c_hw_available() ? "on" : "off");
}

static char tmpdir[64];

static void write_test_shard(const char *path, int n) {
  const char *classes[2] = {"cat", "dog"};
  shard_writer *w = shard_create(path, 2, classes, n);
  for (int i = 0; i < n; i++) {
    char name[32], data[100];
    snprintf(name, sizeof name, "img%d.jpg", i);
    for (int k = 0; k < 10 + i; k++) data[k] = (char)(i + k);
    shard_append(w, i % 2, name, data, (size_t)(10 + i));
  }
  uint64_t bytes;
  uint32_t crc;
  shard_finish(w, &bytes, &crc);
  uint64_t b2;
  uint32_t c2;
  char err[SHARD_ERR_LEN];
  CHECK(shard_file_checksum(path, &b2, &c2, err, sizeof err) == 0 && b2 == bytes && c2 == crc, "file checksum");
}

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = xmalloc((size_t)len + 1);
  *n = fread(b, 1, (size_t)len, f);
  fclose(f);
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  fwrite(b, 1, n, f);
  fclose(f);
}

static void test_shard(void) {
  char path[128], bad[128], err[SHARD_ERR_LEN];
  snprintf(path, sizeof path, "%s/a.shard", tmpdir);
  snprintf(bad, sizeof bad, "%s/bad.shard", tmpdir);
  write_test_shard(path, 20);
  shard_reader *r = shard_open(path, err, sizeof err);
  CHECK(r, "open: %s", err);
  if (!r) return;
  CHECK(shard_count(r) == 20 && shard_num_classes(r) == 2 && !strcmp(shard_class_name(r, 1), "dog"), "header");
  shard_buf buf = {0};
  for (int i = 19; i >= 0; i--) { /* random access, backwards */
    shard_record rec;
    CHECK(shard_read(r, i, &buf, &rec, err, sizeof err) == 0, "read %d: %s", i, err);
    char name[32];
    snprintf(name, sizeof name, "img%d.jpg", i);
    CHECK(rec.label == i % 2 && !strcmp(rec.name, name) && rec.len == (size_t)(10 + i) && rec.data[3] == (unsigned char)(i + 3),
          "record %d contents", i);
  }
  shard_record rec;
  CHECK(shard_read(r, 20, &buf, &rec, err, sizeof err) != 0, "out of range read refused");
  shard_close(r);

  size_t n;
  unsigned char *orig = slurp(path, &n);
  /* A flipped byte inside record 5's image: open succeeds, reading record 5 names it. */
  unsigned char *b = xmalloc(n);
  memcpy(b, orig, n);
  r = shard_open(path, err, sizeof err);
  size_t pos = 0;
  for (size_t i = 0; i + 8 < n; i++)
    if (!memcmp(orig + i, "img5.jpg", 8)) pos = i + 8 + 3;
  shard_close(r);
  b[pos] ^= 0x40;
  spit(bad, b, n);
  r = shard_open(bad, err, sizeof err);
  CHECK(r != NULL, "flipped data byte: open still fine");
  if (r) {
    CHECK(shard_read(r, 4, &buf, &rec, err, sizeof err) == 0, "record 4 intact");
    CHECK(shard_read(r, 5, &buf, &rec, err, sizeof err) != 0 && strstr(err, "record 5") && strstr(err, "bad.shard") &&
              strstr(err, "img5.jpg") && strstr(err, "pollen prepare --force"),
          "flipped byte message: %s", err);
    shard_close(r);
  }
  /* Truncated: any cut is caught at open. */
  size_t cuts[4] = {n - 1, n - 40, n / 2, 10};
  for (int c = 0; c < 4; c++) {
    spit(bad, orig, cuts[c]);
    r = shard_open(bad, err, sizeof err);
    CHECK(!r && strstr(err, "truncated") && strstr(err, "pollen prepare --force"), "truncated at %zu: %s", cuts[c], r ? "opened" : err);
    shard_close(r);
  }
  /* Wrong magic and wrong version say how to regenerate. */
  memcpy(b, orig, n);
  b[0] = 'X';
  spit(bad, b, n);
  r = shard_open(bad, err, sizeof err);
  CHECK(!r && strstr(err, "not a pollen shard") && strstr(err, "pollen prepare --force"), "magic: %s", err);
  memcpy(b, orig, n);
  b[8] = 99;
  spit(bad, b, n);
  r = shard_open(bad, err, sizeof err);
  CHECK(!r && strstr(err, "version 99") && strstr(err, "pollen prepare --force"), "version: %s", err);
  /* A flipped byte in the header or the index. */
  memcpy(b, orig, n);
  b[20] ^= 1;
  spit(bad, b, n);
  r = shard_open(bad, err, sizeof err);
  CHECK(!r && strstr(err, "header"), "header flip: %s", err);
  memcpy(b, orig, n);
  b[n - 32 - 8] ^= 1;
  spit(bad, b, n);
  r = shard_open(bad, err, sizeof err);
  CHECK(!r && strstr(err, "index"), "index flip: %s", err);
  free(b);
  free(orig);
  free(buf.p);
  unlink(bad);
  unlink(path);
  /* An empty shard is valid. */
  write_test_shard(path, 0);
  r = shard_open(path, err, sizeof err);
  CHECK(r && shard_count(r) == 0, "empty shard: %s", err);
  shard_close(r);
  unlink(path);
}

/* The Python fixture holds the first 2 photos (sorted) of each sample class. */
static void test_tfrecord(void) {
  const char *fixture = "tests/data/flowers_sample.tfrecord";
  char err[SHARD_ERR_LEN];
  tfrecord_reader *r = tfrecord_open(fixture, err, sizeof err);
  CHECK(r, "%s", err);
  if (!r) return;
  const unsigned char *data;
  size_t len;
  int rc, count = 0, per_label[5] = {0};
  while ((rc = tfrecord_next(r, &data, &len, err, sizeof err)) == 1) {
    tfrecord_example ex;
    CHECK(tfrecord_parse_example(data, len, &ex, err, sizeof err) == 0, "parse: %s", err);
    if (ex.label >= 0 && ex.label < 5) {
      const char *cls = tfrecord_flowers_classes[ex.label];
      char dir[256];
      snprintf(dir, sizeof dir, "tests/data/flowers_sample/%s", cls);
      struct dirent **names;
      int m = scandir(dir, &names, NULL, alphasort), found = 0, k = 0;
      for (int i = 0; i < m; i++) {
        if (names[i]->d_name[0] != '.' && k++ == per_label[ex.label]) {
          char p[512];
          snprintf(p, sizeof p, "%s/%s", dir, names[i]->d_name);
          size_t fl;
          unsigned char *fb = slurp(p, &fl);
          found = fb && fl == ex.image_len && !memcmp(fb, ex.image, fl);
          free(fb);
        }
        free(names[i]);
      }
      free(names);
      CHECK(found, "record %d (label %lld) has the bytes of the matching sample photo", count, (long long)ex.label);
      per_label[ex.label]++;
    }
    free(ex.image);
    count++;
  }
  CHECK(rc == 0, "clean end: %s", err);
  CHECK(count == 10, "10 records, got %d", count);
  for (int k = 0; k < 5; k++) CHECK(per_label[k] == 2, "2 per label");
  tfrecord_close(r);

  /* C writer + encoder round trip; a flipped byte and a cut are caught. */
  char path[128];
  snprintf(path, sizeof path, "%s/t.tfrecord", tmpdir);
  FILE *f = fopen(path, "wb");
  size_t elen;
  unsigned char *enc = tfrecord_encode_example("\xff\xd8\xff", 3, 4, &elen);
  CHECK(tfrecord_write(f, enc, elen) == 0 && tfrecord_write(f, enc, elen) == 0, "write");
  fclose(f);
  tfrecord_example ex;
  CHECK(tfrecord_parse_example(enc, elen, &ex, err, sizeof err) == 0 && ex.label == 4 && ex.image_len == 3, "encode/parse");
  free(ex.image);
  CHECK(tfrecord_parse_example((const unsigned char *)"\x0a\x02\x0a\x00", 4, &ex, err, sizeof err) != 0 && strstr(err, "image"),
        "missing image key refused: %s", err);
  free(enc);
  size_t n;
  unsigned char *b = slurp(path, &n);
  b[n - 6] ^= 1;
  spit(path, b, n);
  r = tfrecord_open(path, err, sizeof err);
  CHECK(tfrecord_next(r, &data, &len, err, sizeof err) == 1, "first intact");
  CHECK(tfrecord_next(r, &data, &len, err, sizeof err) == -1 && strstr(err, "record 1") && strstr(err, "CRC"), "flip: %s", err);
  tfrecord_close(r);
  b[n - 6] ^= 1;
  spit(path, b, n - 3);
  r = tfrecord_open(path, err, sizeof err);
  tfrecord_next(r, &data, &len, err, sizeof err);
  CHECK(tfrecord_next(r, &data, &len, err, sizeof err) == -1 && strstr(err, "truncated"), "cut: %s", err);
  tfrecord_close(r);
  free(b);
  unlink(path);
}

/* Rewrites the manifest with the first FROM replaced by TO. */
static void edit_manifest(const char *path, const char *from, const char *to) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  REQUIRE(b, "read %s", path);
  b[n] = 0;
  char *at = strstr((char *)b, from);
  REQUIRE(at, "'%s' in %s", from, path);
  FILE *f = fopen(path, "wb");
  REQUIRE(f, "rewrite %s", path);
  fwrite(b, 1, (size_t)(at - (char *)b), f);
  fputs(to, f);
  fputs(at + strlen(from), f);
  fclose(f);
  free(b);
}

static void test_manifest(void) {
  char *classes[2] = {"cat", "dog"}, tr0[] = "train-00000-of-00002.shard", tr1[] = "train-00001-of-00002.shard",
       va0[] = "val-00000-of-00001.shard";
  int64_t train_per_class[2] = {3, 2}, val_per_class[2] = {1, 1};
  manifest_shard train_shards[2] = {{tr0, 3, 1000, 0xdeadbeefu}, {tr1, 2, 700, 0x00000001u}};
  manifest_shard val_shards[1] = {{va0, 2, 300, 0x89abcdefu}};
  manifest_info m = {.source = "/photos", .source_kind = "folder", .seed = MANIFEST_MAX_SEED, .val_fraction = 0.25,
                     .max_side = 256, .shards = 2, .num_classes = 2, .classes = classes,
                     .train = {5, train_per_class, 2, train_shards}, .val = {2, val_per_class, 1, val_shards},
                     .skipped_not_image = 4, .skipped_corrupt = 1, .skipped_unreadable = 0};
  char err[SHARD_ERR_LEN], path[128];
  snprintf(path, sizeof path, "%s/" MANIFEST_FILE, tmpdir);
  REQUIRE(manifest_write(tmpdir, &m, err, sizeof err) == 0, "%s", err);
  CHECK(access(path, F_OK) == 0, "written under its final name");
  snprintf(err, sizeof err, "%s.tmp", path);
  CHECK(access(err, F_OK) != 0, "no .tmp left");
  manifest_info *r = manifest_read(tmpdir, err, sizeof err);
  REQUIRE(r, "%s", err);
  CHECK(!strcmp(r->source, "/photos") && !strcmp(r->source_kind, "folder") && r->seed == MANIFEST_MAX_SEED &&
            r->val_fraction == 0.25 && r->max_side == 256 && r->shards == 2,
        "settings");
  CHECK(r->num_classes == 2 && !strcmp(r->classes[0], "cat") && !strcmp(r->classes[1], "dog"), "classes");
  CHECK(r->skipped_not_image == 4 && r->skipped_corrupt == 1 && r->skipped_unreadable == 0, "skipped");
  const manifest_split *t = manifest_find_split(r, "train"), *v = manifest_find_split(r, "val");
  REQUIRE(t && v && !manifest_find_split(r, "test"), "splits by name");
  CHECK(t->count == 5 && t->per_class[0] == 3 && t->n_shards == 2 && v->count == 2 && v->n_shards == 1, "counts");
  CHECK(!strcmp(t->shards[1].file, tr1) && t->shards[1].count == 2 && t->shards[1].bytes == 700 &&
            t->shards[1].crc32c == 1 && v->shards[0].crc32c == 0x89abcdefu,
        "shard entries");
  manifest_free(r);

  edit_manifest(path, "\"format_version\":\t1", "\"format_version\":\t2");
  CHECK(!manifest_read(tmpdir, err, sizeof err) && strstr(err, "version 2 but this pollen reads version 1"), "%s", err);
  REQUIRE(manifest_write(tmpdir, &m, err, sizeof err) == 0, "%s", err);
  edit_manifest(path, "\"count\":\t5", "\"count\":\t6");
  CHECK(!manifest_read(tmpdir, err, sizeof err) && strstr(err, "is damaged"), "counts that do not add up: %s", err);
  REQUIRE(manifest_write(tmpdir, &m, err, sizeof err) == 0, "%s", err);
  edit_manifest(path, tr0, "../escape.shard");
  CHECK(!manifest_read(tmpdir, err, sizeof err) && strstr(err, "is damaged"), "a shard outside the folder: %s", err);
  REQUIRE(manifest_write(tmpdir, &m, err, sizeof err) == 0, "%s", err);
  edit_manifest(path, "\"dog\"", "\"d\xffg\"");
  CHECK(!manifest_read(tmpdir, err, sizeof err) && strstr(err, "is damaged"), "a class name that is not UTF-8: %s", err);
  char *bad[2] = {"cat", "d\xffg"};
  m.classes = bad;
  CHECK(manifest_write(tmpdir, &m, err, sizeof err) != 0 && strstr(err, "not UTF-8"), "writing a name that is not UTF-8");
  m.classes = classes;
  unlink(path);
  CHECK(!manifest_read(tmpdir, err, sizeof err) && strstr(err, "pollen prepare --src"), "missing: %s", err);
}

/* name_escape: what a name from disk looks like in a message. */
static void test_name_escape(void) {
  static const struct { const char *in, *out; } cases[] = {
      {"daisy/123.jpg", "daisy/123.jpg"},
      {"a\npollen: fake", "a\\x0apollen: fake"},
      {"\x1b[31mred", "\\x1b[31mred"},
      {"say \"hi\" \\ bye", "say \\\"hi\\\" \\\\ bye"},
      {"tab\tdel\x7f", "tab\\x09del\\x7f"},
      {"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8c\xbc", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8c\xbc"}, /* UTF-8 stays */
      {"caf\xe9", "caf\\xe9"},                                          /* Latin-1 */
      {"\xc2\x9b" "2J", "\\xc2\\x9b2J"},                               /* C1 CSI */
      {"\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80", "\\xc0\\xaf \\xed\\xa0\\x80 \\xf4\\x90\\x80\\x80"}, /* overlong, surrogate, > U+10FFFF */
      {"cut\xe2\x9c", "cut\\xe2\\x9c"},                                /* truncated sequence */
  };
  char buf[256];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK(!strcmp(name_escape(cases[i].in, buf, sizeof buf), cases[i].out), "case %zu: got '%s', want '%s'", i, buf,
          cases[i].out);
    CHECK(text_is_utf8(cases[i].in) == (name_utf8(cases[i].in, buf, sizeof buf) == cases[i].in),
          "case %zu: name_utf8 keeps exactly the UTF-8 names", i);
  }
  CHECK(text_is_utf8("new\nline") && !text_is_utf8("caf\xe9") && text_is_utf8(""), "text_is_utf8");
  /* The worst case, 4 bytes out per byte in, fits 4n + 1; a short buffer cuts between
   * characters and says so. */
  CHECK(!strcmp(name_escape("\xff\xff", buf, 9), "\\xff\\xff"), "4n + 1 fits");
  CHECK(!strcmp(name_escape("\xff\xff", buf, 8), "\\xff..."), "cut: %s", buf);
  CHECK(!strcmp(name_escape("abcdef", buf, 4), "..."), "tiny: %s", buf);
  CHECK(!strcmp(name_escape("ab", buf, 2), "a"), "tinier: %s", buf);
}

static void test_plan(void) {
  int64_t n = 1000, a[1000], b[1000], c[1000];
  plan_shuffle(7, 3, n, a);
  plan_shuffle(7, 3, n, b);
  plan_shuffle(7, 4, n, c);
  int seen[1000] = {0}, same = 1, diff = 0, fixed = 0;
  for (int i = 0; i < n; i++) {
    if (a[i] >= 0 && a[i] < n) seen[a[i]]++;
    same &= a[i] == b[i];
    diff += a[i] != c[i];
    fixed += a[i] == i;
  }
  for (int i = 0; i < n; i++) CHECK(seen[i] == 1, "permutation: %d seen %d times", i, seen[i]);
  CHECK(same, "deterministic");
  CHECK(diff > 900, "another epoch gives another order (%d differ)", diff);
  CHECK(fixed < 20, "shuffled (%d fixed points)", fixed);
  /* Each rank's samples from step 2 on (global batch 12 over 3 ranks, 83 steps): rank r
   * takes the r-th contiguous 4 of each step, so together the ranks read every sample of
   * those steps once and the 4 samples past the last full step never. */
  static int64_t mine[3][1000];
  int taken[1000] = {0};
  for (int r = 0; r < 3; r++) {
    int64_t cnt = plan_rank_samples(a, 2, 83, 12, r, 4, mine[r]);
    CHECK(cnt == 81 * 4, "rank %d takes 4 samples of each of 81 steps (%lld)", r, (long long)cnt);
    CHECK(mine[r][0] == a[2 * 12 + r * 4] && mine[r][4] == a[3 * 12 + r * 4], "rank %d: its part of steps 2 and 3", r);
    for (int64_t k = 0; k < cnt; k++) taken[mine[r][k]]++;
  }
  int once = 1;
  for (int i = 0; i < n; i++) once &= taken[a[i]] == (i >= 24 && i < 996);
  CHECK(once, "the ranks together read steps 2..82 once each, and nothing else");
  CHECK(plan_rank_samples(a, 83, 83, 12, 0, 4, mine[0]) == 0, "nothing left after the last step");
  /* Epochs as users read them: from 1, the epoch of the last step done. */
  CHECK(plan_epoch_number(0, 0) == 1 && plan_epoch_number(0, 1) == 1 && plan_epoch_number(0, 11) == 1,
        "epoch 1 from the start through its last step");
  CHECK(plan_epoch_number(1, 0) == 1 && plan_epoch_number(1, 1) == 2 && plan_epoch_number(7, 0) == 7,
        "an epoch's end shows the epoch it ends; the next step is the next epoch");
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/pollen-test-formats-XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  test_crc();
  test_shard();
  test_tfrecord();
  test_manifest();
  test_name_escape();
  test_plan();
  rmdir(tmpdir);
  if (check_failures) fprintf(stderr, "%d checks failed\n", check_failures);
  else printf("all data format checks passed\n");
  return check_status();
}
