"""Whether a workflow's steps form a DAG the engine can run: unique ids, every `needs` naming a
step, and no cycle (a cycle would wait forever, so it is refused with the cycle spelled out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    id: str
    needs: tuple[str, ...]


def problems(steps: Sequence[Node]) -> list[str]:
    """What is wrong with the graph, each as one sentence; empty when it is a DAG."""
    found: list[str] = []
    if not steps:
        return ["a workflow needs at least one step"]
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            found.append(f"step id {step.id!r} is used more than once")
        seen.add(step.id)
    for step in steps:
        for need in step.needs:
            if need not in seen:
                found.append(f"step {step.id!r} needs {need!r}, which is not a step")
            elif need == step.id:
                found.append(f"step {step.id!r} needs itself")
        if len(set(step.needs)) != len(step.needs):
            found.append(f"step {step.id!r} lists a need more than once")
    if found:
        return found
    cycle = find_cycle({s.id: s.needs for s in steps})
    if cycle:
        found.append("the steps form a cycle (each needs the next): " + " → ".join(cycle))
    return found


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as the path that closes it (`a → b → a`), or None. Iterative DFS: definitions
    come from clients, and a deep chain must not exhaust the stack."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in needs:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            edges = needs.get(node, ())
            if index < len(edges):
                stack.append((node, index + 1))
                nxt = edges[index]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Every step after the steps it needs (Kahn's algorithm, stable in definition order)."""
    waiting = {node: set(deps) for node, deps in needs.items()}
    order: list[str] = []
    while waiting:
        ready = [n for n, deps in waiting.items() if not deps]
        if not ready:
            raise ValueError("the steps form a cycle")
        for node in ready:
            order.append(node)
            del waiting[node]
        for deps in waiting.values():
            deps.difference_update(ready)
    return order
