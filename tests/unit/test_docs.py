"""The docs: generated pages equal what the code says, the site builds strict, and nothing points
users at files they do not have."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_technique_table_is_generated_from_the_catalog(cli) -> None:
    res = cli("techniques", "--markdown")
    assert res.returncode == 0 and res.stdout.count("\n") >= 11
    for page in ("guide/techniques.md", "reference/techniques.md"):
        assert res.stdout.strip() in (ROOT / "docs" / page).read_text(), (
            "regenerate: slimline techniques --markdown / python docs/generate.py"
        )


def test_generated_reference_pages_match_the_code() -> None:
    """docs/generate.py --check changes nothing and finds every page identical (issue 26)."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_readme_is_short_and_every_link_resolves() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    assert text.count("\n") <= 200
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), f"{doc}: broken link {target}"


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """mkdocs build --strict (the dev extra has it): a broken link or a missing page fails."""
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def test_docs_never_send_users_to_the_shared_folder() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        assert "../shared" not in doc.read_text(), doc
