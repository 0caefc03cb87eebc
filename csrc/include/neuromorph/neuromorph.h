/* Neuromorph C API: embed the engine without Python.
 *
 * Models are integer handles (never reused: a released handle gives NM_ERR_HANDLE). Every
 * function returns a status; on failure nm_last_error() describes it (per thread). Data are
 * row-major float32 buffers of shape (n_batches, batch_size, width). Nothing here exits or
 * aborts. Link with the CMake target neuromorph::runtime (find_package(neuromorph)).
 */
#ifndef NEUROMORPH_H
#define NEUROMORPH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NM_API_VERSION 2

typedef int32_t nm_handle;

enum nm_status {
  NM_OK = 0,
  NM_ERR_IR = 1,       /* malformed or wrong-version IR */
  NM_ERR_HANDLE = 2,   /* unknown or released handle */
  NM_ERR_STATE = 3,    /* e.g. train before build */
  NM_ERR_SHAPE = 4,    /* wrong sizes */
  NM_ERR_DATA = 5,     /* NaN/inf or out-of-range settings */
  NM_ERR_DEVICE = 6,
  NM_ERR_FILE = 7,     /* unreadable, corrupt or foreign model file */
  NM_ERR_MEMORY = 8,
  NM_ERR_ARGUMENT = 9, /* a null pointer or bad argument */
  NM_ERR_INTERNAL = 10,
  NM_ERR_DIVERGED = 11  /* training met a non-finite loss or gradient; the model is as before that batch */
};

int nm_api_version(void);
const char* nm_last_error(void);

int nm_seed(uint64_t seed);
/* A float32 model from IR JSON text (as `mdlc compile` writes it) or an IR file; plain SGD. */
int nm_load_ir(const char* ir_json, int batch_size, double learning_rate, nm_handle* out);
int nm_load_ir_file(const char* path, int batch_size, double learning_rate, nm_handle* out);
int nm_build(nm_handle h);
int nm_shape(nm_handle h, int* batch_size, int* input_width, int* output_width);
/* Train on n_batches batches; *mean_loss (may be NULL) gets the mean batch loss. */
int nm_train(nm_handle h, const float* inputs, const float* expected, int n_batches,
             double* mean_loss);
int nm_predict(nm_handle h, const float* inputs, int n_batches, float* outputs);
int nm_reset_state(nm_handle h);
int nm_save(nm_handle h, const char* path);
int nm_load(const char* path, nm_handle* out);
int nm_release(nm_handle h);
/* Move a built model to "cpu" or "cuda" (parameters, state, optimizer state and step count move
 * exactly; the handle stays the same). NM_ERR_DEVICE when CUDA is unavailable. (API version 2) */
int nm_to_device(nm_handle h, const char* device);

#ifdef __cplusplus
}
#endif
#endif
