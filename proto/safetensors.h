/* safetensors.h - read and write the safetensors tensor-file format (Hugging Face's).
 *
 * Format: 8-byte little-endian header length N, then N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the data section; offsets are relative to its start, tensors are row-major and
 * little-endian. pollen uses it for PyTorch reference dumps (tests/ref/), weight export
 * (torchvision names and layouts) and anything else that leaves the engine as named tensors.
 *
 * The reader treats every byte as untrusted: the header length is checked against the file
 * size, the JSON is parsed strictly (known keys only, no duplicates, integer shapes and
 * offsets), and the tensors must exactly tile the data section (in bounds, no overlap, no
 * gap, size = dtype size * number of elements), as the reference implementation requires.
 * Errors are one line naming the file and what is wrong.
 *
 * Not for: checkpoints with optimizer state and resumable progress (see the checkpoint
 * module), which have their own versioned format. */
#ifndef POLLEN_SAFETENSORS_H
#define POLLEN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_RANK 8
/* The reference implementation's limit; a larger header is certainly not a model file. */
#define ST_MAX_HEADER (100u * 1024 * 1024)
#define ST_MAX_NAME 1024

typedef enum { ST_F32 = 0, ST_F64, ST_I64, ST_I32, ST_U8, ST_BF16, ST_F16, ST_N_DTYPES } st_dtype;

typedef struct {
  const char *name;
  st_dtype dtype;
  int ndim; /* 0 = scalar (one element) */
  int64_t shape[ST_MAX_RANK];
  uint64_t numel;
  size_t nbytes;
  /* Points into the file's buffer, valid until st_close. The data section starts 64-byte
   * aligned in memory, so data is aligned to its element size whenever the file's offsets
   * are (always so for files written by st_writer or the official library); use the
   * st_copy_* helpers to be safe with any file. */
  const void *data;
} st_tensor;

typedef struct {
  char *path; /* for messages */
  int n_tensors;
  st_tensor *tensors; /* in data-offset order */
  int n_meta;
  char **meta_keys, **meta_values;
  uint8_t *buf; /* owns everything the tensors point at */
} st_file;

/* Opens and validates a whole file. On failure returns NULL and writes one line
 * ("PATH: what is wrong") into err (errlen bytes, may be 0). */
st_file *st_open(const char *path, char *err, size_t errlen);
/* Same, dying with that line ("...; regenerate or re-export it") on failure. */
st_file *st_open_or_die(const char *path);
/* Parses a file image already in memory (copied; name is used in messages). */
st_file *st_parse(const void *bytes, size_t size, const char *name, char *err, size_t errlen);
void st_close(st_file *f);

/* NULL when absent. */
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);
/* Finds name and checks it has the given dtype and shape; dies naming the file, the tensor
 * and the mismatch otherwise. shape may be NULL to accept any shape of rank ndim
 * (ndim < 0: any rank). */
const st_tensor *st_expect(const st_file *f, const char *name, st_dtype dtype, int ndim,
                           const int64_t *shape);

const char *st_dtype_name(st_dtype d);
size_t st_dtype_size(st_dtype d);
/* -1 if unknown. */
int st_dtype_parse(const char *s);

/* Copy a tensor's elements out, converting F32/F64/F16/BF16 -> float or I64/I32/U8 -> int64.
 * n must equal t->numel. Returns 0, or -1 if the dtype cannot be converted (float vs int). */
int st_copy_f32(const st_tensor *t, float *dst, size_t n);
int st_copy_i64(const st_tensor *t, int64_t *dst, size_t n);

/* ---- writer: collect named tensors and metadata, then write the file atomically
 * (temporary file in the same directory, fsync, rename, fsync of the directory), so a
 * reader never sees a half-written file. Data is copied at add time. Adding a name twice
 * is a caller bug (asserts). */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape,
                       const float *data);
void st_writer_add_i64(st_writer *w, const char *name, int ndim, const int64_t *shape,
                       const int64_t *data);
/* A later value for the same key replaces the earlier one. */
void st_writer_meta(st_writer *w, const char *key, const char *value);
/* Returns 0, or -1 with the cause (from errno) and what to do in err, e.g. "cannot write PATH:
 * no space left on the device; ..."; a failed save removes its temporary file. */
int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen);
void st_writer_save_or_die(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

#endif
