"""C source for one model: its trees as static tables walked without branches, or as
nested ``if``s when too deep. Only numbers and feature indexes from the model reach the
source, each formatted here."""

from __future__ import annotations

from typing import Any

from .ensemble import Ensemble, Transform, f32, padded

MAX_GROUPED_TREES = 1024
"""Up to this many trees, trees are grouped by depth (each padded only to its group's
depth) and their leaves kept on the stack, then summed in the model's order; above it,
every tree is padded to the deepest and summed as it is walked (also in order)."""

_WALKS = r"""
static inline uint32_t go_right(float v, float t, uint8_t default_left) {
  return (uint32_t)(v >= t) | ((uint32_t)(v != v) & (uint32_t)(default_left ^ 1));
}
#define INNER(D) ((1 << (D)) - 1)
#define NEXT(n, D, tree, i, v) \
  (2 * (i) + 1 + go_right((v), THR_##n[(int64_t)(tree) * INNER(D) + (i)], \
                          DLEFT_##n[(int64_t)(tree) * INNER(D) + (i)]))
#define FEATURE(n, D, tree, i) FEAT_##n[(int64_t)(tree) * INNER(D) + (i)]
#define LEAF(n, D, tree, i) LEAF_##n[(int64_t)(tree) * (INNER(D) + 1) + (i) - INNER(D)]
/* One row (x) through group n's COUNT trees of depth D, 8 trees at a time: their
 * independent chains of loads overlap. */
#define ROW_GROUP(n, D, COUNT) { \
  int t = 0; \
  for (; t + 8 <= (COUNT); t += 8) { \
    uint32_t idx[8] = {0}; \
    for (int d = 0; d < (D); ++d) \
      for (int j = 0; j < 8; ++j) \
        idx[j] = NEXT(n, D, t + j, idx[j], x[FEATURE(n, D, t + j, idx[j])]); \
    for (int j = 0; j < 8; ++j) ROW_SINK(n, t + j, LEAF(n, D, t + j, idx[j])); \
  } \
  for (; t < (COUNT); ++t) { \
    uint32_t i = 0; \
    for (int d = 0; d < (D); ++d) i = NEXT(n, D, t, i, x[FEATURE(n, D, t, i)]); \
    ROW_SINK(n, t, LEAF(n, D, t, i)); \
  } }
/* 8 rows through group n's trees, one tree at a time: the rows' chains overlap, where
 * nested ifs stall on every mispredicted branch. */
#define BLOCK_GROUP(n, D, COUNT) \
  for (int t = 0; t < (COUNT); ++t) { \
    uint32_t idx[8] = {0}; \
    for (int d = 0; d < (D); ++d) \
      for (int r = 0; r < 8; ++r) \
        idx[r] = NEXT(n, D, t, idx[r], rows[r * WIDTH + FEATURE(n, D, t, idx[r])]); \
    for (int r = 0; r < 8; ++r) BLOCK_SINK(n, t, r, LEAF(n, D, t, idx[r])); \
  }
"""

_DIRECT = """#define ROW_SINK(n, t, v) (sums[CLASS_OF(t)] += (v))
#define BLOCK_SINK(n, t, r, v) (sums[(r) * CLASSES + CLASS_OF(t)] += (v))"""
_GROUPED = """#define ROW_SINK(n, t, v) (vals[ORIG_##n[t]] = (v))
#define BLOCK_SINK(n, t, r, v) (vals[(int64_t)ORIG_##n[t] * 8 + (r)] = (v))
#define ROW_SUM for (int t = 0; t < TREES; ++t) sums[CLASS_OF(t)] += vals[t];
#define BLOCK_SUM for (int t = 0; t < TREES; ++t) for (int r = 0; r < 8; ++r) \\
    sums[r * CLASSES + CLASS_OF(t)] += vals[(int64_t)t * 8 + r];"""

_ENTRY = """
static void predict_row(const float* x, float* out) {
  float sums[CLASSES];
  for (int k = 0; k < CLASSES; ++k) sums[k] = MARGINS[k];
  {VALS}
  {ROW}
  {ROW_SUM}
  finish(sums, out);
}
static void predict_block(const float* rows, float* out) {
  float sums[8 * CLASSES];
  for (int r = 0; r < 8; ++r) for (int k = 0; k < CLASSES; ++k) sums[r * CLASSES + k] = MARGINS[k];
  {BLOCK_VALS}
  {BLOCK}
  {BLOCK_SUM}
  for (int r = 0; r < 8; ++r) finish(sums + r * CLASSES, out + r * OUTPUTS);
}
void fs_predict(const float* rows, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) predict_block(rows + i * WIDTH, out + i * OUTPUTS);
  for (; i < n; ++i) predict_row(rows + i * WIDTH, out + i * OUTPUTS);
}"""


def _float(value: float) -> str:
    """A C float literal that parses back to exactly the same float32."""
    return f"{f32(value):.9e}f"


def _table(kind: str, name: str, values: list[str]) -> str:
    return f"static const {kind} {name}[{len(values)}] = {{{','.join(values)}}};"


def _prelude(ensemble: Ensemble) -> list[str]:
    """Includes, sizes, per-class margins, each tree's class and ``finish(sums, out)``:
    one row's per-class sums into its predictions."""
    if ensemble.transform is Transform.SOFTMAX:  # stable: exp of (sum - the largest sum)
        body = """float top = sums[0];
  for (int k = 1; k < CLASSES; ++k) top = sums[k] > top ? sums[k] : top;
  float total = 0.0f;
  for (int k = 0; k < CLASSES; ++k) { out[k] = expf(sums[k] - top); total += out[k]; }
  for (int k = 0; k < CLASSES; ++k) out[k] /= total;"""
    elif ensemble.transform is Transform.ARGMAX:  # the first of equal sums, as XGBoost
        body = """int best = 0;
  for (int k = 1; k < CLASSES; ++k) best = sums[k] > sums[best] ? k : best;
  out[0] = (float)best;"""
    else:
        body = f"float s = sums[0];\n  out[0] = {ensemble.transform.c('s')};"
    classes = ensemble.classes
    return [
        "#include <math.h>\n#include <stdint.h>",
        f"#define TREES {len(ensemble.trees)}\n#define WIDTH {ensemble.width}",
        f"#define CLASSES {classes}\n#define OUTPUTS {ensemble.outputs}",
        _table("float", "MARGINS", [_float(m) for m in ensemble.margins]),
        _table("uint8_t", "CLASS", list(map(str, ensemble.tree_class))) if classes > 1 else "",
        f"#define CLASS_OF(t) {'CLASS[t]' if classes > 1 else '0'}",
        f"static inline void finish(const float* sums, float* out) {{\n  {body}\n}}",
        "int32_t fs_num_features(void) { return WIDTH; }",
        "int32_t fs_num_outputs(void) { return OUTPUTS; }",
    ]


def _table_kernel(ensemble: Ensemble) -> str:
    """The trees as complete-tree tables, walked without branches (``_WALKS``).

    Node ``i``'s children are ``2i+1`` and ``2i+2``; a leaf above the last level is
    padded with a subtree whose leaves all repeat its value, so either way is right.
    ``x >= t`` is false for NaN, so a missing value goes right only when the node's
    default is right, as in XGBoost. Grouped by depth, the leaves are summed per class
    in the model's tree order afterwards: the same float sums as XGBoost's.
    """
    depths = ensemble.depths
    grouped = len(set(depths)) > 1 and len(depths) <= MAX_GROUPED_TREES
    if grouped:
        groups = [(d, [i for i, di in enumerate(depths) if di == d]) for d in sorted(set(depths))]
    else:
        groups = [(ensemble.depth, list(range(len(depths))))]
    parts = [*_prelude(ensemble), _WALKS, _GROUPED if grouped else _DIRECT]
    row, block = [], []
    for n, (depth, members) in enumerate(groups):
        feat: list[str] = []
        thr: list[str] = []
        dflt: list[str] = []
        leaf: list[str] = []
        for index in members:
            tree_feat, tree_thr, tree_dflt, tree_leaf = padded(ensemble.trees[index], depth)
            feat += map(str, tree_feat)
            thr += map(_float, tree_thr)
            dflt += map(str, tree_dflt)
            leaf += map(_float, tree_leaf)
        parts += [
            _table("int32_t", f"FEAT_{n}", feat),
            _table("float", f"THR_{n}", thr),
            _table("uint8_t", f"DLEFT_{n}", dflt),
            _table("float", f"LEAF_{n}", leaf),
        ]
        if grouped:
            parts.append(_table("int32_t", f"ORIG_{n}", list(map(str, members))))
        row.append(f"ROW_GROUP({n}, {depth}, {len(members)})")
        block.append(f"BLOCK_GROUP({n}, {depth}, {len(members)})")
    entry = (
        _ENTRY.replace("{VALS}", "float vals[TREES];" if grouped else "")
        .replace("{BLOCK_VALS}", "float vals[TREES * 8];" if grouped else "")
        .replace("{ROW_SUM}", "ROW_SUM" if grouped else "")
        .replace("{BLOCK_SUM}", "BLOCK_SUM" if grouped else "")
        .replace("{ROW}", "\n  ".join(row))
        .replace("{BLOCK}", "\n  ".join(block))
    )
    return "\n".join([*parts, entry, ""])


def _tree_function(index: int, tree: dict[str, Any]) -> str:
    left, right = tree["left_children"], tree["right_children"]
    features, conditions = tree["split_indices"], tree["split_conditions"]
    default_left = tree["default_left"]
    lines = [f"static inline float tree_{index}(const float* x) {{"]

    def emit(node: int, depth: int) -> None:
        pad = "  " * depth
        if left[node] == -1:
            lines.append(f"{pad}return {_float(conditions[node])};")
            return
        feature = int(features[node])
        test = f"x[{feature}] < {_float(conditions[node])}"
        if default_left[node]:  # a NaN compares false: send it left explicitly
            test = f"{test} || isnan(x[{feature}])"
        lines.append(f"{pad}if ({test}) {{")
        emit(int(left[node]), depth + 1)
        lines.append(f"{pad}}} else {{")
        emit(int(right[node]), depth + 1)
        lines.append(f"{pad}}}")

    emit(0, 1)
    lines.append("}")
    return "\n".join(lines)


def _nested_ifs(ensemble: Ensemble) -> str:
    """Trees too deep for tables: one function of nested ``if``s per tree."""
    parts = _prelude(ensemble)
    parts.extend(_tree_function(i, tree) for i, tree in enumerate(ensemble.trees))
    total = " ".join(f"sums[{c}] += tree_{i}(x);" for i, c in enumerate(ensemble.tree_class))
    parts.append(
        f"""
void fs_predict(const float* rows, int64_t n, float* out) {{
  for (int64_t i = 0; i < n; ++i) {{
    const float* x = rows + i * WIDTH;
    float sums[CLASSES];
    for (int k = 0; k < CLASSES; ++k) sums[k] = MARGINS[k];
    {total}
    finish(sums, out + i * OUTPUTS);
  }}
}}
"""
    )
    return "\n".join(parts)


def generate_c(ensemble: Ensemble) -> tuple[str, int]:
    """The C source of ``fs_predict(rows, n, out)`` (``fs_num_outputs()`` predictions
    per row) and the model's feature count."""
    if ensemble.fits_tables:
        return _table_kernel(ensemble), ensemble.width
    return _nested_ifs(ensemble), ensemble.width
