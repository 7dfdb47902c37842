"""Repository-level promises: CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fenced_bash_blocks(markdown: str) -> list[str]:
    blocks, current, inside = [], [], False
    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            if inside:
                blocks.append("\n".join(current).strip())
                current = []
            inside = not inside
        elif inside:
            current.append(line)
    return blocks


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [b for b in _fenced_bash_blocks(readme) if "pytest" in b]
    assert commands, "README has no test command"
    test_command = commands[0]
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_ci_pins_the_cpu_torch_build():
    assert "torch==2.13.0" in (ROOT / ".ci" / "run").read_text()


def test_only_the_command_line_imports_the_cli():
    """The CLI is a thin layer over the library: library modules and scripts never import it."""
    offenders = []
    for path in [*(ROOT / "src" / "sanawm").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        if "cli" in path.relative_to(ROOT).parts or path.name == "__main__.py":
            continue
        text = path.read_text()
        if "from sanawm.cli" in text or "import sanawm.cli" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
