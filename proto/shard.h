/* shard.h - pollen's shard file: a split of the prepared dataset (JPEG images + labels) in one
 * file that supports random access, written by `pollen prepare` and read by the loader.
 *
 * Layout (little-endian; proto/README.md "Shard files" is the full description):
 *   header   "PLNSHARD" u32 version u32 body_len | body: u32 num_classes, num_classes x
 *            (u16 len, name bytes), u64 record_count | u32 crc32c(magic .. body)
 *   records  record_count x (u32 label, u32 name_len, u32 data_len, name, JPEG data,
 *            u32 crc32c of the record's preceding bytes)
 *   index    record_count x u64 absolute offset of each record
 *   footer   u64 index_offset, u64 record_count, u32 crc32c(index), u32 crc32c(footer's first
 *            20 bytes), "PLNSHEND"                                           (32 bytes)
 * Not for: the manifest (proto/manifest.h) or decoding images (loader). */
#ifndef POLLEN_SHARD_H
#define POLLEN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_VERSION 1
#define SHARD_MAX_CLASSES 4096
#define SHARD_MAX_CLASS_NAME 255
#define SHARD_MAX_NAME 1024          /* a record's source name, e.g. "daisy/123.jpg" */
#define SHARD_MAX_DATA (64u << 20)   /* one encoded image */
#define SHARD_MAX_RECORDS (1ll << 32)
#define SHARD_ERR_LEN 512

/* ---- writing (pollen prepare). I/O errors die naming the file. ---- */
typedef struct shard_writer shard_writer;
/* Writes PATH.tmp and renames it to PATH in shard_finish, so a killed run never leaves a
 * file that looks complete. count: the exact number of records that will be appended. */
shard_writer *shard_create(const char *path, int num_classes, const char *const *class_names,
                           int64_t count);
void shard_append(shard_writer *w, int label, const char *name, const void *data, size_t len);
/* Finishes, closes and frees w; gives the file's size and the crc32c of all its bytes. */
void shard_finish(shard_writer *w, uint64_t *bytes, uint32_t *file_crc);

/* ---- reading. Every byte is untrusted; errors come back as one line in err naming the file
 * (and the record), ending with how to regenerate. Thread-safe: reads use pread. ---- */
typedef struct shard_reader shard_reader;
typedef struct {
  unsigned char *p; /* grown as needed by shard_read; free(p) when done */
  size_t cap;
} shard_buf;
typedef struct {
  int label;
  const char *name; /* NUL-terminated, inside the shard_buf */
  const unsigned char *data;
  size_t len;
} shard_record;

/* Checks magic, version, header CRC, footer and index. NULL with err set on failure. */
shard_reader *shard_open(const char *path, char *err, size_t errlen);
void shard_close(shard_reader *r);
int64_t shard_count(const shard_reader *r);
int shard_num_classes(const shard_reader *r);
const char *shard_class_name(const shard_reader *r, int k);
const char *shard_path(const shard_reader *r);
/* Reads and checks record i into buf; rec points into buf. 0 on success, -1 with err set. */
int shard_read(shard_reader *r, int64_t i, shard_buf *buf, shard_record *rec, char *err,
               size_t errlen);

/* Size and crc32c of a whole file (the manifest's per-shard checksum). -1 with err set. */
int shard_file_checksum(const char *path, uint64_t *bytes, uint32_t *crc, char *err, size_t errlen);

#endif
