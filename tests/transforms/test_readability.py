"""The planner stays readable: no function in transforms/ longer than 80 lines, every stage documents the rules
it applies, and every rule id cited in transforms/ is one docs/rules.md defines."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRANSFORMS = ROOT / "transforms"
MAX_LINES = 80
RULE_ID = re.compile(r"\b([RC])([1-9]\d?)\b")  # (C0 is a Unicode control block, not a rule)


def _functions():
    for path in sorted(TRANSFORMS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node


def test_no_function_in_transforms_is_longer_than_80_lines():
    long = [f"{path}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)" for path, fn in _functions()
            if fn.end_lineno - fn.lineno + 1 > MAX_LINES]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def test_every_public_stage_function_names_its_rules():
    missing = []
    for path, fn in _functions():
        if path.parts[:2] != ("transforms", "stages") or fn.name.startswith("_") or path.name in ("positions.py", "common.py", "ids.py"):
            continue
        doc = ast.get_docstring(fn) or ""
        if not RULE_ID.search(doc):
            missing.append(f"{path}:{fn.lineno} {fn.name}")
    assert not missing, "a stage's docstring names the rules it applies (R1-R18, C1-C24):\n" + "\n".join(missing)


def _defined_ids() -> set[str]:
    text = (ROOT / "docs" / "rules.md").read_text()
    # a rule is defined by a bold heading such as **R8 / C8 — Deletions.**
    return {f"{k}{n}" for heading in re.findall(r"\*\*([^*]+)\*\*", text) for k, n in RULE_ID.findall(heading.split("—")[0])}


def test_docs_define_every_rule_r1_r18_and_c1_c24():
    assert _defined_ids() == {f"R{i}" for i in range(1, 19)} | {f"C{i}" for i in range(1, 25)}


def test_every_rule_id_cited_in_transforms_is_defined_in_docs_rules():
    defined, cited = _defined_ids(), {}
    for path in sorted(TRANSFORMS.rglob("*.py")):
        for k, n in RULE_ID.findall(path.read_text()):
            cited.setdefault(f"{k}{n}", path.relative_to(ROOT))
    undefined = {i: str(p) for i, p in cited.items() if i not in defined}
    assert not undefined, f"cited but not defined in docs/rules.md: {undefined}"


def test_nothing_in_transforms_or_the_docs_cites_a_file_outside_the_repository():
    files = [*TRANSFORMS.rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    outside = [str(p.relative_to(ROOT)) for p in files if re.search(r"DESIGN(\.md)?\b|STYLE\.md|API-FACTS", p.read_text())]
    assert not outside, f"these cite files that are not in the repository: {outside}"


def _test_table() -> dict[str, str]:
    """docs/rules.md's "Where each rule is tested": {rule cell: tests cell}."""
    text = (ROOT / "docs" / "rules.md").read_text().split("## Where each rule is tested", 1)[1]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", text, re.M)
    return {rule: cell for rule, cell in rows if rule not in ("rule", "---")}


def test_the_docs_say_where_each_rule_is_tested_and_those_tests_exist():
    table = _test_table()
    listed = {f"{k}{n}" for rule in table for k, n in RULE_ID.findall(rule)}
    assert listed == {f"R{i}" for i in range(1, 19)} | {f"C{i}" for i in range(1, 25)}
    missing = []
    for rule, cell in table.items():
        for part in cell.split("; "):
            path, names = part.split(": ", 1)
            source = ROOT / path.strip("`")
            if not source.is_file():
                missing.append(f"{rule}: {path}")
                continue
            defined = set(re.findall(r"^def (test_\w+)", source.read_text(), re.M))
            missing += [f"{rule}: {path}::{n}" for n in re.findall(r"`(test_\w+)`", names) if n not in defined]
    assert not missing, "docs/rules.md names tests that do not exist:\n" + "\n".join(missing)
