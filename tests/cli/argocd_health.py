"""Runs the Argo CD health check (``deploy/argocd/health/.../health.lua``) in a real Lua.

Argo CD runs health scripts in gopher-lua, a Lua 5.1, with the object as the global
``obj`` (JSON numbers become Lua numbers, lists become 1-based tables). lupa's
``lua51`` runtime is the same language; ``os``, ``io`` and module loading are
removed first, so the script cannot lean on anything Argo CD's sandbox lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lupa.lua51

ROOT = Path(__file__).resolve().parents[2]
HEALTH_DIR = ROOT / "deploy" / "argocd" / "health" / "fleetshift.dev" / "Endpoint"
HEALTH_LUA = HEALTH_DIR / "health.lua"
SANDBOX = "os = nil; io = nil; require = nil; dofile = nil; loadfile = nil; package = nil"


def evaluate_health(endpoint: Mapping[str, Any]) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` as Argo CD would compute it for ``endpoint``."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(SANDBOX)
    lua.globals().obj = lua.table_from(dict(endpoint), recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return {"status": str(result["status"]), "message": str(result["message"])}
