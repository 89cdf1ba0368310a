/* tfrecord.c - TFRecord framing (masked CRC32C) and tf.Example parsing with protobuf-c. */
#include "proto/tfrecord.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "proto/crc32c.h"
#include "proto/example.pb-c.h"

const char *const tfrecord_flowers_classes[5] = {"dandelion", "daisy", "tulips", "sunflowers", "roses"};

uint32_t tfrecord_mask_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct tfrecord_reader {
  char *path;
  FILE *f;
  int64_t index;
  unsigned char *buf;
  size_t cap;
};

tfrecord_reader *tfrecord_open(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    err_set(err, errlen, "cannot open TFRecord file %s: %s", path, strerror(errno));
    return NULL;
  }
  tfrecord_reader *r = xcalloc(1, sizeof *r);
  r->path = xstrdup(path);
  r->f = f;
  return r;
}

int tfrecord_next(tfrecord_reader *r, const unsigned char **data, size_t *len, char *err, size_t errlen) {
  unsigned char head[12];
  size_t got = fread(head, 1, 12, r->f);
  if (got == 0 && feof(r->f)) return 0;
  if (got != 12) {
    err_set(err, errlen, "TFRecord file %s is truncated at record %lld (partial length field)", r->path,
           (long long)r->index);
    return -1;
  }
  uint64_t n = (uint64_t)le32(head) | (uint64_t)le32(head + 4) << 32;
  if (tfrecord_mask_crc(crc32c_update(0, head, 8)) != le32(head + 8)) {
    /* GZIP-compressed TFRecord files start with 1f 8b: say so rather than "corrupt". */
    if (r->index == 0 && head[0] == 0x1f && head[1] == 0x8b)
      err_set(err, errlen, "TFRecord file %s is GZIP-compressed; decompress it first (gunzip)", r->path);
    else
      err_set(err, errlen, "TFRecord file %s: record %lld has a corrupt length (CRC mismatch); is it a TFRecord file?",
             r->path, (long long)r->index);
    return -1;
  }
  if (n > TFRECORD_MAX_RECORD) {
    err_set(err, errlen, "TFRecord file %s: record %lld is %llu bytes, more than the %u pollen accepts", r->path,
           (long long)r->index, (unsigned long long)n, TFRECORD_MAX_RECORD);
    return -1;
  }
  if (r->cap < n + 4) {
    r->buf = xrealloc(r->buf, (size_t)n + 4);
    r->cap = (size_t)n + 4;
  }
  if (fread(r->buf, 1, (size_t)n + 4, r->f) != (size_t)n + 4) {
    err_set(err, errlen, "TFRecord file %s is truncated in record %lld", r->path, (long long)r->index);
    return -1;
  }
  if (tfrecord_mask_crc(crc32c_update(0, r->buf, (size_t)n)) != le32(r->buf + n)) {
    err_set(err, errlen, "TFRecord file %s: record %lld is corrupt (data CRC mismatch)", r->path, (long long)r->index);
    return -1;
  }
  r->index++;
  *data = r->buf;
  *len = (size_t)n;
  return 1;
}

void tfrecord_close(tfrecord_reader *r) {
  if (!r) return;
  fclose(r->f);
  free(r->buf);
  free(r->path);
  free(r);
}

int tfrecord_write(FILE *f, const void *data, size_t len) {
  unsigned char head[12], tail[4];
  uint64_t n = len;
  for (int i = 0; i < 8; i++) head[i] = (unsigned char)(n >> (8 * i));
  uint32_t c = tfrecord_mask_crc(crc32c_update(0, head, 8));
  for (int i = 0; i < 4; i++) head[8 + i] = (unsigned char)(c >> (8 * i));
  c = tfrecord_mask_crc(crc32c_update(0, data, len));
  for (int i = 0; i < 4; i++) tail[i] = (unsigned char)(c >> (8 * i));
  if (fwrite(head, 1, 12, f) != 12 || (len && fwrite(data, 1, len, f) != len) || fwrite(tail, 1, 4, f) != 4) return -1;
  return 0;
}

static const Tensorflow__Feature *find_feature(const Tensorflow__Features *fs, const char *key) {
  for (size_t i = 0; i < fs->n_feature; i++)
    if (fs->feature[i] && fs->feature[i]->key && !strcmp(fs->feature[i]->key, key)) return fs->feature[i]->value;
  return NULL;
}

int tfrecord_parse_example(const unsigned char *data, size_t len, tfrecord_example *ex, char *err, size_t errlen) {
  memset(ex, 0, sizeof *ex);
  Tensorflow__Example *e = tensorflow__example__unpack(NULL, len, data);
  if (!e) {
    err_set(err, errlen, "not a tf.Example (protobuf parse failed)");
    return -1;
  }
  int rc = -1;
  const Tensorflow__Features *fs = e->features;
  if (!fs) {
    err_set(err, errlen, "tf.Example has no features");
    goto done;
  }
  const Tensorflow__Feature *img = find_feature(fs, "image/encoded");
  if (!img) img = find_feature(fs, "image");
  const Tensorflow__Feature *lab = find_feature(fs, "label");
  if (!img || img->kind_case != TENSORFLOW__FEATURE__KIND_BYTES_LIST || !img->bytes_list ||
      img->bytes_list->n_value != 1) {
    err_set(err, errlen, "tf.Example lacks a bytes feature 'image' or 'image/encoded' with one value");
    goto done;
  }
  if (!lab || lab->kind_case != TENSORFLOW__FEATURE__KIND_INT64_LIST || !lab->int64_list ||
      lab->int64_list->n_value != 1) {
    err_set(err, errlen, "tf.Example lacks an int64 feature 'label' with one value");
    goto done;
  }
  const ProtobufCBinaryData *b = &img->bytes_list->value[0];
  ex->image = xmalloc(b->len ? b->len : 1);
  if (b->len) memcpy(ex->image, b->data, b->len);
  ex->image_len = b->len;
  ex->label = lab->int64_list->value[0];
  rc = 0;
done:
  tensorflow__example__free_unpacked(e, NULL);
  return rc;
}

unsigned char *tfrecord_encode_example(const void *image, size_t image_len, int64_t label, size_t *out_len) {
  ProtobufCBinaryData bin = {image_len, (uint8_t *)image};
  Tensorflow__BytesList bl = TENSORFLOW__BYTES_LIST__INIT;
  bl.n_value = 1;
  bl.value = &bin;
  Tensorflow__Int64List il = TENSORFLOW__INT64_LIST__INIT;
  il.n_value = 1;
  il.value = &label;
  Tensorflow__Feature fimg = TENSORFLOW__FEATURE__INIT, flab = TENSORFLOW__FEATURE__INIT;
  fimg.kind_case = TENSORFLOW__FEATURE__KIND_BYTES_LIST;
  fimg.bytes_list = &bl;
  flab.kind_case = TENSORFLOW__FEATURE__KIND_INT64_LIST;
  flab.int64_list = &il;
  Tensorflow__Features__FeatureEntry e0 = TENSORFLOW__FEATURES__FEATURE_ENTRY__INIT,
                                     e1 = TENSORFLOW__FEATURES__FEATURE_ENTRY__INIT;
  e0.key = (char *)"image";
  e0.value = &fimg;
  e1.key = (char *)"label";
  e1.value = &flab;
  Tensorflow__Features__FeatureEntry *entries[2] = {&e0, &e1};
  Tensorflow__Features fs = TENSORFLOW__FEATURES__INIT;
  fs.n_feature = 2;
  fs.feature = entries;
  Tensorflow__Example ex = TENSORFLOW__EXAMPLE__INIT;
  ex.features = &fs;
  size_t n = tensorflow__example__get_packed_size(&ex);
  unsigned char *out = xmalloc(n ? n : 1);
  tensorflow__example__pack(&ex, out);
  *out_len = n;
  return out;
}
