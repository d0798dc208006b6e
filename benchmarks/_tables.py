"""Markdown building blocks shared by the report scripts (``summarize.py``,
``summarize_modes.py``): medians with their spread, tables, the machine a run ran on."""

from __future__ import annotations

import statistics
from typing import Any


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: str) -> str:
    """``median [min–max]`` of ``values`` formatted with ``fmt``."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return (f"{format(med(values), fmt)} [{format(min(values), fmt)}–"
            f"{format(max(values), fmt)}]")


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_block(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items() if val)
    dirty = (" (the working tree had uncommitted changes to tracked files)"
             if m.get("git_dirty") else "")
    env = ", ".join(f"`{k}={val}`" for k, val in m.get("child_env", {}).items())
    lines = [
        f"- Machine: {m['cores']} cores ({m.get('cpu_model')}), "
        f"{m.get('memory_gib')} GiB RAM, {m['platform']}, Python {m['python']}.",
        f"- Versions: {v}.",
        f"- Repository at `{(m.get('git_commit') or 'unknown')[:12]}`{dirty}.",
        f"- Run: {doc['started']} → {doc.get('finished') or 'unfinished'}"
        + (f" ({doc['total_wall_s'] / 60:.1f} min)" if "total_wall_s" in doc else "")
        + ".",
    ]
    if env:
        lines.append(f"- Environment of every measured process: {env}.")
    return "\n".join(lines)
