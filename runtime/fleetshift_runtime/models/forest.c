/* Fleetshift's prebuilt tree walker: the same complete-tree tables the per-model build
 * bakes in as constants, passed in at run time instead. It is built once, where a
 * compiler exists (the image's build stage), so a server without a compiler still
 * predicts with compiled code:
 *
 *     python -m fleetshift_runtime.models.compiled OUTPUT.so
 *
 * Layout of a forest of T trees padded to depth D (INNER = 2^D - 1 inner nodes each):
 *   feat[T * INNER], thr[T * INNER], dleft[T * INNER], leaf[T * (INNER + 1)].
 * Node i's children are 2i+1 and 2i+2. x >= thr is false for NaN, so a missing value
 * goes right only when the node's default is right, as in XGBoost.
 */
#include <math.h>
#include <stdint.h>

#define FS_FOREST_ABI 1

enum { FS_IDENTITY = 0, FS_LOGISTIC = 1, FS_EXP = 2 };

typedef struct {
  int32_t trees;
  int32_t depth;
  int32_t width;
  int32_t transform;
  float margin;
  const int32_t* feat;
  const float* thr;
  const uint8_t* dleft;
  const float* leaf;
} fs_forest;

int32_t fs_forest_abi(void) { return FS_FOREST_ABI; }

static inline float fs_transform(int32_t kind, float s) {
  if (kind == FS_LOGISTIC) return 1.0f / (1.0f + expf(-s));
  if (kind == FS_EXP) return expf(s);
  return s;
}

#define FS_BLOCK(B)                                                                     \
  static void fs_block_##B(const fs_forest* m, const float* rows, float* out,          \
                           int64_t n) {                                                 \
    const int64_t inner = ((int64_t)1 << m->depth) - 1;                                 \
    const int32_t width = m->width;                                                     \
    float sum[B];                                                                       \
    uint32_t idx[B];                                                                    \
    for (int r = 0; r < B; ++r) sum[r] = m->margin;                                     \
    for (int32_t t = 0; t < m->trees; ++t) {                                            \
      const int32_t* f = m->feat + t * inner;                                           \
      const float* th = m->thr + t * inner;                                             \
      const uint8_t* dl = m->dleft + t * inner;                                         \
      for (int r = 0; r < B; ++r) idx[r] = 0;                                           \
      for (int32_t d = 0; d < m->depth; ++d) {                                          \
        for (int r = 0; r < B; ++r) {                                                   \
          uint32_t i = idx[r];                                                          \
          float x = rows[r * width + f[i]];                                             \
          uint32_t right =                                                              \
              (uint32_t)(x >= th[i]) | ((uint32_t)(x != x) & (uint32_t)(dl[i] ^ 1));    \
          idx[r] = 2 * i + 1 + right;                                                   \
        }                                                                               \
      }                                                                                 \
      const float* lv = m->leaf + t * (inner + 1) - inner;                              \
      for (int r = 0; r < B; ++r) sum[r] += lv[idx[r]];                                 \
    }                                                                                   \
    for (int64_t r = 0; r < n; ++r) out[r] = fs_transform(m->transform, sum[r]);        \
  }

FS_BLOCK(1)
FS_BLOCK(8)

void fs_forest_predict(const fs_forest* m, const float* rows, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) fs_block_8(m, rows + i * m->width, out + i, 8);
  for (; i < n; ++i) fs_block_1(m, rows + i * m->width, out + i, 1);
}
