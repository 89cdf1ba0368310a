/* tfrecord.h - TensorFlow's TFRecord framing and the tf.Example fields pollen needs, so
 * `pollen prepare` can read TFDS tf_flowers shards directly.
 *
 * A TFRecord file is a sequence of records:
 *   u64 length | u32 masked_crc32c(length bytes) | data[length] | u32 masked_crc32c(data)
 * (little-endian; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8). Both CRCs are checked.
 * An input file's records are serialized tf.Examples (proto/example.proto); TensorBoard's event
 * files are the same framing around Events (proto/tb_events.h). Not for: TFRecord compression
 * (GZIP/ZLIB files are refused with a message). */
#ifndef POLLEN_TFRECORD_H
#define POLLEN_TFRECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TFRECORD_MAX_RECORD (256u << 20) /* one serialized example; TFDS images are far smaller */

uint32_t tfrecord_mask_crc(uint32_t crc);

typedef struct tfrecord_reader tfrecord_reader;
/* NULL with err set ("cannot open ...") on failure. */
tfrecord_reader *tfrecord_open(const char *path, char *err, size_t errlen);
/* Reads the next record into an internal buffer valid until the next call. Returns 1 with
 * data and len set, 0 at a clean end of file, -1 with err naming the file and record number
 * (truncated, bad length CRC, bad data CRC, too large). */
int tfrecord_next(tfrecord_reader *r, const unsigned char **data, size_t *len, char *err, size_t errlen);
void tfrecord_close(tfrecord_reader *r);

/* Appends one framed record; -1 on a write error (errno set). */
int tfrecord_write(FILE *f, const void *data, size_t len);

/* A tf_flowers example: the encoded image and its integer label. */
typedef struct {
  unsigned char *image; /* malloc'd copy; free() it */
  size_t image_len;
  int64_t label;
} tfrecord_example;
/* Parses a serialized tf.Example holding bytes feature "image/encoded" or "image" and int64
 * feature "label". 0 on success, -1 with err set (not a tf.Example, missing or mistyped key). */
int tfrecord_parse_example(const unsigned char *data, size_t len, tfrecord_example *ex, char *err, size_t errlen);
/* Serializes an example with keys "image" and "label" (tests and fixtures); free() the result. */
unsigned char *tfrecord_encode_example(const void *image, size_t image_len, int64_t label, size_t *out_len);

/* TFDS tf_flowers' label order: label k is tfrecord_flowers_classes[k]. */
extern const char *const tfrecord_flowers_classes[5];

#endif
