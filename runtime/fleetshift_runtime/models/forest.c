/* Fleetshift's prebuilt tree walker: the same complete-tree tables the per-model build
 * bakes in as constants, passed in at run time instead. It is built once, where a
 * compiler exists (the image's build stage), so a server without a compiler still
 * predicts with compiled code:
 *
 *     python -m fleetshift_runtime.models.compiled OUTPUT.so
 *
 * Layout of a forest of T trees padded to depth D (INNER = 2^D - 1 inner nodes each):
 *   feat[T * INNER], thr[T * INNER], dleft[T * INNER], leaf[T * (INNER + 1)],
 *   tree_class[T] (the class each tree's leaf adds to), margins[classes].
 * Node i's children are 2i+1 and 2i+2. x >= thr is false for NaN, so a missing value
 * goes right only when the node's default is right, as in XGBoost. Each row's sums are
 * added to in the model's tree order (XGBoost's float sums, in the same order), then
 * turned into `outputs` predictions: one per class for softmax, else one.
 */
#include <math.h>
#include <stdint.h>

#define FS_FOREST_ABI 2
#define FS_MAX_CLASSES 256
#define FS_ROW_TREES 8
#define FS_BLOCK_ROWS 8

enum { FS_IDENTITY = 0, FS_LOGISTIC = 1, FS_EXP = 2, FS_SOFTMAX = 3, FS_ARGMAX = 4 };

typedef struct {
  int32_t trees;
  int32_t depth;
  int32_t width;
  int32_t transform;
  int32_t classes;
  int32_t outputs;
  const float* margins;
  const int32_t* tree_class;
  const int32_t* feat;
  const float* thr;
  const uint8_t* dleft;
  const float* leaf;
} fs_forest;

int32_t fs_forest_abi(void) { return FS_FOREST_ABI; }

static inline uint32_t fs_right(float v, float t, uint8_t default_left) {
  return (uint32_t)(v >= t) | ((uint32_t)(v != v) & (uint32_t)(default_left ^ 1));
}

static void fs_finish(const fs_forest* m, const float* sums, float* out) {
  const int32_t k_max = m->classes;
  if (m->transform == FS_SOFTMAX) { /* stable: exp of (sum - the largest sum) */
    float top = sums[0];
    for (int32_t k = 1; k < k_max; ++k) top = sums[k] > top ? sums[k] : top;
    float total = 0.0f;
    for (int32_t k = 0; k < k_max; ++k) { out[k] = expf(sums[k] - top); total += out[k]; }
    for (int32_t k = 0; k < k_max; ++k) out[k] /= total;
  } else if (m->transform == FS_ARGMAX) { /* the first of equal largest sums */
    int32_t best = 0;
    for (int32_t k = 1; k < k_max; ++k) best = sums[k] > sums[best] ? k : best;
    out[0] = (float)best;
  } else if (m->transform == FS_LOGISTIC) {
    out[0] = 1.0f / (1.0f + expf(-sums[0]));
  } else if (m->transform == FS_EXP) {
    out[0] = expf(sums[0]);
  } else {
    out[0] = sums[0];
  }
}

/* One row through the trees, FS_ROW_TREES trees at a time: their chains of loads overlap. */
static void fs_row(const fs_forest* m, const float* x, float* out) {
  const int64_t inner = ((int64_t)1 << m->depth) - 1;
  float sums[FS_MAX_CLASSES];
  for (int32_t k = 0; k < m->classes; ++k) sums[k] = m->margins[k];
  int32_t t = 0;
  for (; t + FS_ROW_TREES <= m->trees; t += FS_ROW_TREES) {
    uint32_t idx[FS_ROW_TREES] = {0};
    for (int32_t d = 0; d < m->depth; ++d) {
      for (int j = 0; j < FS_ROW_TREES; ++j) {
        const int64_t at = (int64_t)(t + j) * inner + idx[j];
        idx[j] = 2 * idx[j] + 1 + fs_right(x[m->feat[at]], m->thr[at], m->dleft[at]);
      }
    }
    for (int j = 0; j < FS_ROW_TREES; ++j)
      sums[m->tree_class[t + j]] += m->leaf[(int64_t)(t + j) * (inner + 1) + idx[j] - inner];
  }
  for (; t < m->trees; ++t) {
    uint32_t i = 0;
    for (int32_t d = 0; d < m->depth; ++d) {
      const int64_t at = (int64_t)t * inner + i;
      i = 2 * i + 1 + fs_right(x[m->feat[at]], m->thr[at], m->dleft[at]);
    }
    sums[m->tree_class[t]] += m->leaf[(int64_t)t * (inner + 1) + i - inner];
  }
  fs_finish(m, sums, out);
}

/* FS_BLOCK_ROWS rows through one tree at a time: the rows' chains of loads overlap. */
static void fs_block(const fs_forest* m, const float* rows, float* out) {
  const int64_t inner = ((int64_t)1 << m->depth) - 1;
  const int32_t width = m->width, classes = m->classes;
  float sums[FS_BLOCK_ROWS * FS_MAX_CLASSES];
  for (int r = 0; r < FS_BLOCK_ROWS; ++r)
    for (int32_t k = 0; k < classes; ++k) sums[r * classes + k] = m->margins[k];
  for (int32_t t = 0; t < m->trees; ++t) {
    const int32_t* f = m->feat + (int64_t)t * inner;
    const float* th = m->thr + (int64_t)t * inner;
    const uint8_t* dl = m->dleft + (int64_t)t * inner;
    uint32_t idx[FS_BLOCK_ROWS] = {0};
    for (int32_t d = 0; d < m->depth; ++d) {
      for (int r = 0; r < FS_BLOCK_ROWS; ++r) {
        const uint32_t i = idx[r];
        idx[r] = 2 * i + 1 + fs_right(rows[r * width + f[i]], th[i], dl[i]);
      }
    }
    const float* lv = m->leaf + (int64_t)t * (inner + 1) - inner;
    const int32_t c = m->tree_class[t];
    for (int r = 0; r < FS_BLOCK_ROWS; ++r) sums[r * classes + c] += lv[idx[r]];
  }
  for (int r = 0; r < FS_BLOCK_ROWS; ++r) fs_finish(m, sums + r * classes, out + r * m->outputs);
}

void fs_forest_predict(const fs_forest* m, const float* rows, int64_t n, float* out) {
  if (m->classes < 1 || m->classes > FS_MAX_CLASSES) return; /* refused in Python first */
  int64_t i = 0;
  for (; i + FS_BLOCK_ROWS <= n; i += FS_BLOCK_ROWS)
    fs_block(m, rows + i * m->width, out + i * m->outputs);
  for (; i < n; ++i) fs_row(m, rows + i * m->width, out + i * m->outputs);
}
