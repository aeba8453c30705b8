"""The README's technique table is the catalog's own, as `slimline techniques --markdown` prints it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_technique_table_is_generated_from_the_catalog(cli) -> None:
    res = cli("techniques", "--markdown")
    assert res.returncode == 0 and res.stdout.count("\n") >= 11
    assert res.stdout.strip() in (ROOT / "README.md").read_text(), (
        "regenerate: slimline techniques --markdown"
    )


def test_docs_never_send_users_to_the_shared_folder() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        assert "../shared" not in doc.read_text(), doc
