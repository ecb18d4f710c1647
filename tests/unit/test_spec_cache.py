"""The daemon's incremental load: unchanged files are not parsed again, results stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync import specs


def doc(name: str, image: str) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images: [{image}]\n"
    )


def test_only_changed_files_are_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        (tmp_path / f"f{i}.yaml").write_text(doc(f"c{i}", "nginx:1.27.2"))
    cache = specs.FileCache()
    first = specs.load_repository([tmp_path], root=tmp_path, cache=cache)
    assert first.ok
    assert len(first.caches) == 20

    checked: list[str] = []
    real = specs._check_file

    def counting(file: specs._File) -> specs._FileResult:
        checked.append(file.display)
        return real(file)

    # Both places that check a file: in this process, and in a forked worker.
    monkeypatch.setattr(specs.loading, "_check_file", counting)
    monkeypatch.setattr(specs.pool, "_check_file", counting)
    again = specs.load_repository([tmp_path], root=tmp_path, cache=cache)
    assert checked == []
    assert again == first

    (tmp_path / "f3.yaml").write_text(doc("c3", "nginx:1.27.3"))
    (tmp_path / "f4.yaml").unlink()
    changed = specs.load_repository([tmp_path], root=tmp_path, cache=cache)
    assert checked == ["f3.yaml"]
    assert len(changed.caches) == 19
    assert next(c for c in changed.caches if c.name == "c3").images == ("nginx:1.27.3",)


def test_cross_file_checks_still_see_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(doc("same", "nginx:1.27.2"))
    cache = specs.FileCache()
    assert specs.load_repository([tmp_path], root=tmp_path, cache=cache).ok
    (tmp_path / "b.yaml").write_text(doc("same", "busybox:1.36.1"))
    result = specs.load_repository([tmp_path], root=tmp_path, cache=cache)
    assert not result.ok
    assert [d.rule for d in result.errors] == ["duplicate-name"]
    assert result == specs.load_repository([tmp_path], root=tmp_path)
