"""The source of one pytest-gremlins mutant, written out as a plain file (to re-run it against more tests).

    python tests/mutants/gremlin_source.py REPORT.json FILE [--status survived|uncovered] > MUTANTS.json

The tool's JSON report names each gremlin by id (``<stem>_<hash>_gNNN``); the same ids come from running
its ``transform_source`` over the file again (the hash is of the path the tool was given, read from the
report). For each gremlin with the status asked for, the original node's text is replaced by the
mutated node (``ast.unparse``); the output list feeds ``handmut_batch.py``.
"""

import argparse
import ast
import json

from pytest_gremlins.instrumentation.transformer import transform_source


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def mutants(report: dict, path: str, status: str) -> list[dict]:
    """``status``: a status of the report (``survived``, ``zapped``, ...), or ``uncovered`` for the gremlins
    the tool did not run (no selected test covers their line)."""
    mine = [r for r in report["results"] if r["file_path"].endswith(path)]
    if not mine:
        return []
    with open(path) as f:
        source = f.read()
    gremlins, _ = transform_source(source, mine[0]["file_path"])
    if status == "uncovered":
        ran = {r["gremlin_id"] for r in mine}
        chosen = [g for g in gremlins if g.gremlin_id not in ran]
    else:
        by_id = {g.gremlin_id: g for g in gremlins}
        chosen = [by_id[r["gremlin_id"]] for r in mine if r["status"] == status]
    starts = _offsets(source)
    out = []
    for g in chosen:
        node = g.original_node
        a = starts[node.lineno - 1] + node.col_offset
        b = starts[node.end_lineno - 1] + node.end_col_offset
        new = ast.unparse(g.mutated_node)
        out.append({"id": g.gremlin_id, "line": g.line_number, "desc": f"{g.operator_name}: {g.description}",
                    "old": source[a:b], "new": new, "source": source[:a] + new + source[b:], "file": path})
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("report")
    p.add_argument("file")
    p.add_argument("--status", default="survived")
    args = p.parse_args()
    with open(args.report) as f:
        print(json.dumps(mutants(json.load(f), args.file, args.status)))
