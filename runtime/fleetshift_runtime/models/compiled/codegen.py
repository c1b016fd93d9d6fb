"""C source for one model: its trees as static tables walked without branches, or as
nested ``if``s when too deep. Only numbers and feature indexes from the model reach the
source, each formatted here."""

from __future__ import annotations

from typing import Any

from .ensemble import Ensemble, Transform, f32, padded


def _float(value: float) -> str:
    """A C float literal that parses back to exactly the same float32."""
    return f"{f32(value):.9e}f"


def _table_kernel(
    trees: list[dict[str, Any]], width: int, margin: float, transform: Transform, depth: int
) -> str:
    """Every tree padded to a complete tree of ``depth`` levels, walked without branches.

    Node ``i``'s children are ``2i+1`` and ``2i+2``; a leaf above the last level is
    padded with a subtree whose leaves all repeat its value, so either way is right.
    Eight rows are walked together: their independent chains of loads overlap, where
    nested ``if``s stall on every mispredicted branch. ``x >= t`` is false for NaN, so
    a missing value goes right only when the node's default is right, as in XGBoost.
    """
    inner = (1 << depth) - 1
    features: list[str] = []
    thresholds: list[str] = []
    defaults: list[str] = []
    leaves: list[str] = []
    for tree in trees:
        feat, thr, dflt, leaf = padded(tree, depth)
        features += map(str, feat)
        thresholds += map(_float, thr)
        defaults += map(str, dflt)
        leaves += map(_float, leaf)

    def table(kind: str, name: str, values: list[str]) -> str:
        return f"static const {kind} {name}[{len(values)}] = {{{','.join(values)}}};"

    block = """
static void block_{B}(const float* rows, float* out, int64_t m) {{
  float sum[{B}];
  uint32_t idx[{B}];
  for (int r = 0; r < {B}; ++r) sum[r] = MARGIN;
  for (int t = 0; t < TREES; ++t) {{
    const int32_t* f = FEAT + t * INNER;
    const float* th = THR + t * INNER;
    const uint8_t* dl = DLEFT + t * INNER;
    for (int r = 0; r < {B}; ++r) idx[r] = 0;
    for (int d = 0; d < DEPTH; ++d) {{
      for (int r = 0; r < {B}; ++r) {{
        uint32_t i = idx[r];
        float x = rows[r * WIDTH + f[i]];
        uint32_t right = (uint32_t)(x >= th[i]) | ((uint32_t)(x != x) & (uint32_t)(dl[i] ^ 1));
        idx[r] = 2 * i + 1 + right;
      }}
    }}
    for (int r = 0; r < {B}; ++r) sum[r] += LEAF[t * (INNER + 1) + idx[r] - INNER];
  }}
  for (int64_t r = 0; r < m; ++r) {{ float s = sum[r]; out[r] = {transform}; }}
}}
"""
    return "\n".join(
        [
            "#include <math.h>",
            "#include <stdint.h>",
            "#include <string.h>",
            f"#define TREES {len(trees)}",
            f"#define DEPTH {depth}",
            f"#define INNER {inner}",
            f"#define WIDTH {width}",
            f"#define MARGIN {_float(margin)}",
            table("int32_t", "FEAT", features),
            table("float", "THR", thresholds),
            table("uint8_t", "DLEFT", defaults),
            table("float", "LEAF", leaves),
            block.format(B=1, transform=transform.c("s")),
            block.format(B=8, transform=transform.c("s")),
            f"""
int32_t fs_num_features(void) {{ return {width}; }}

void fs_predict(const float* rows, int64_t n, float* out) {{
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) block_8(rows + i * WIDTH, out + i, 8);
  for (; i < n; ++i) block_1(rows + i * WIDTH, out + i, 1);
}}
""",
        ]
    )


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


def generate_c(ensemble: Ensemble) -> tuple[str, int]:
    """The C source of ``fs_predict(rows, n, out)`` and the model's feature count."""
    trees, width, margin, transform = (
        ensemble.trees,
        ensemble.width,
        ensemble.margin,
        ensemble.transform,
    )
    if ensemble.fits_tables:
        return _table_kernel(trees, width, margin, transform, ensemble.depth), width
    parts = ["#include <math.h>", "#include <stdint.h>", ""]
    parts.extend(_tree_function(i, tree) for i, tree in enumerate(trees))
    total = " ".join(f"sum += tree_{i}(x);" for i in range(len(trees)))
    parts.append(
        f"""
int32_t fs_num_features(void) {{ return {width}; }}

void fs_predict(const float* rows, int64_t n, float* out) {{
  for (int64_t i = 0; i < n; ++i) {{
    const float* x = rows + i * {width};
    float sum = {_float(margin)};
    {total}
    out[i] = {transform.c("sum")};
  }}
}}
"""
    )
    return "\n".join(parts), width
