"""Suggestions applied to YAML text: the bytes that must change change, and no others.

`apply_suggestions` takes the texts of the files the suggestions name and
returns their new texts (None deletes a file; a path not given creates one),
and, per suggestion, whether it applied or why not. It reads and writes no
file: the caller reads the tree, validates the result with gitsync's own
loader (`gitsync.suggest.validation.validate_edited`) and writes it or commits
it (`gitsync.sources.gitwrite`).

Why surgical edits rather than a round-trip library such as ruamel.yaml: a
round-trip library re-emits every document it touches from its own model, and
that model does not hold everything a person wrote (indentation of sequences
against their keys, spaces after a dash or before a comment, a flow list's
spacing, the quoting of a scalar nobody changed, CRLF line ends, a `...` end
marker), so a one-tag bump can come back as a diff of a dozen lines, and a
reviewer can no longer see the change for the noise. Here PyYAML's composer
gives each node's start and end offset in the text, the edit replaces exactly
that span (or inserts one line, or deletes a document's lines), and every other
byte is copied through: comments, key order, quoting, blank lines, other
documents, and a `# gitsync: semver=~1.4` marker after an image.

What each kind changes:

* bump-tag: the image whose normalised reference is a `from_images` entry gets
  the matching `to_images` tag or digest; its name is kept as the file spelled
  it (`nginx:1.27` becomes `nginx:1.28`), and so is its quoting.
* add-image: new items at the end of `spec.images`, in the list's own layout
  (block: a line with the siblings' indentation, dash spacing and quoting; flow:
  `, c` after the last item), spelled as the file spells its references
  (familiar `nginx:1.28` where the file writes familiar names).
* resize: the `spec.imageCacheSize` scalar, or a new key line after the
  `images` block, at the indentation of `images`.
* remove-cache: the document's lines, with its `---` line and the comment block
  attached above it (column-0 comment lines directly above, set off by a blank
  line or a document marker from what precedes; comments glued to the previous
  document, and the file's leading comment block, stay). A file left with no
  other document is deleted.
* new-cache: a new file in the style of the repository's other cache files
  (indentation, dash layout, quoting, line ends, retentionDays), never over an
  existing path: `<stem>-2.yaml` and so on instead.

Every edit is checked before it is accepted: both texts are loaded, and the
new documents must equal the old ones with exactly the intended change. A
document that cannot be found (renamed or removed since the suggestion was
made), or is written in a way this module will not edit safely (an alias, a
multi-line or block scalar, a flow `spec`), leaves that file as it was and the
suggestion reported as not applied, with the file and line.

The work is split one concern a module (the package docstring draws the
layers): `locate` finds the nodes and their spans, `spelling` writes
references and scalars as the file does, `textedits` builds each kind's edit,
`recheck` checks it by loading both texts, and `newfile` writes a new cache's
file; this module applies the suggestions in turn and reports each outcome.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gitsync.suggest.locate import _NotApplied, _Source
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.newfile import _new_cache
from gitsync.suggest.recheck import _check_result, _Edit
from gitsync.suggest.textedits import _add_images, _bump_tag, _remove, _resize

__all__ = ["EditOutcome", "EditResult", "apply_suggestions"]


@dataclass(frozen=True, slots=True)
class EditOutcome:
    """What became of one suggestion."""

    suggestion: Suggestion
    applied: bool
    path: str | None  # the file changed, created or deleted (a new cache's actual path)
    detail: str  # what was done, or why not, naming file and line


@dataclass(frozen=True, slots=True)
class EditResult:
    """New texts of the changed files (None: delete the file), and each suggestion's outcome."""

    changes: Mapping[str, str | None]
    outcomes: tuple[EditOutcome, ...]

    @property
    def applied(self) -> tuple[EditOutcome, ...]:
        return tuple(o for o in self.outcomes if o.applied)

    @property
    def skipped(self) -> tuple[EditOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.applied)


def apply_suggestions(
    files: Mapping[str, str],
    suggestions: Sequence[Suggestion],
    *,
    style_from: Mapping[str, str] | None = None,
    existing_paths: Collection[str] = (),
) -> EditResult:
    """Apply each suggestion in turn to `files` (repository-relative path → text).

    `style_from` holds the texts of the repository's other cache files: a new
    cache mirrors their layout, and its name and path must not clash with theirs
    (default: `files`). `existing_paths` names every other file of the tree, so
    that a new file never takes an existing path. Suggestions apply in order, each
    to the texts the previous ones left; one that fails changes nothing.
    """
    current: dict[str, str | None] = dict(files)
    others = dict(style_from) if style_from is not None else {}
    taken = set(existing_paths) | set(files) | set(others)
    outcomes: list[EditOutcome] = []
    for suggestion in suggestions:
        try:
            path, text, detail = _apply_one(suggestion, current, others, taken)
        except _NotApplied as exc:
            named = suggestion.file or (suggestion.location.path if suggestion.location else None)
            outcomes.append(EditOutcome(suggestion, applied=False, path=named, detail=str(exc)))
            continue
        current[path] = text
        taken.add(path)
        outcomes.append(EditOutcome(suggestion, applied=True, path=path, detail=detail))
    changes = {
        path: text
        for path, text in current.items()
        if (files[path] != text if path in files else text is not None)
    }
    return EditResult(changes=changes, outcomes=tuple(outcomes))


def _apply_one(
    suggestion: Suggestion,
    current: Mapping[str, str | None],
    others: Mapping[str, str],
    taken: set[str],
) -> tuple[str, str | None, str]:
    if suggestion.kind is SuggestionKind.NEW_CACHE:
        return _new_cache(suggestion, current, others, taken)
    path = suggestion.file or (suggestion.location.path if suggestion.location else None)
    if path is None:
        raise _NotApplied(f"cache {suggestion.cache}: the suggestion names no file")
    if path not in current:
        raise _NotApplied(f"{path}: not read, so cache {suggestion.cache} cannot be edited there")
    text = current[path]
    if text is None:
        raise _NotApplied(f"{path}: deleted by an earlier suggestion")
    source = _Source(path, text)
    found = source.find_cache(suggestion.cache)
    edit: _Edit
    if suggestion.kind is SuggestionKind.BUMP_TAG:
        edit = _bump_tag(source, found, suggestion)
    elif suggestion.kind is SuggestionKind.ADD_IMAGE:
        edit = _add_images(source, found, suggestion)
    elif suggestion.kind is SuggestionKind.RESIZE:
        edit = _resize(source, found, suggestion)
    else:
        edit = _remove(source, found)
    new_text = edit.apply(text)
    if new_text is not None:
        _check_result(source, found, edit, new_text)
    return path, new_text, edit.detail
