"""Load a cache repository's YAML with line numbers, validate it, and say precisely what is wrong.

`gitsync validate` runs on every pull request and the reconciler runs it on
every revision, so this package has three jobs it must not trade against each
other: point at the exact line of every problem, never crash or hang on
hostile input (the repository is written by people, and CI runs on forks),
and stay fast on large repositories (10,000 documents well under two seconds
as a whole process).

One module per concern, each importing only those below it (an import-linter
contract in pyproject.toml keeps it so):

* `loading`: `load_repository` and `FileCache`; the cross-file name check.
* `pool`: large trees shared with a forked worker.
* `documents`: one file's documents, the ImageCache and semantic checks.
* `schema`: the compiled JSON Schema check and jsonschema's explanations;
  `drift`: how a cache follows its images (the `gitsync.io/refresh`
  annotation, the tags it would refresh, `# gitsync:` image policy markers
  read from the file's text).
* `context`: JSON paths to file positions, findings to diagnostics.
* `yaml_events`: YAML bytes to values with positions, without recursion or
  alias expansion; the depth and alias budgets.
* `reading`: a file's bytes, refused before parsing when too large, not a
  regular file, not UTF-8 or with a NUL byte.
* `walk`: which files to read; symlinks leaving the tree.
* `text`: values and JSON paths as messages show them.

Rule ids (stable; CI filters and docs refer to them):

=================== ======== ===================================================
rule                severity meaning
=================== ======== ===================================================
file-unreadable     error    cannot be read: permissions, not a regular file,
                             a broken symlink
file-too-large      error    larger than 1 MiB; not read
file-encoding       error    not UTF-8, or contains a NUL byte
symlink-escape      error    a symlink whose target leaves the validated tree;
                             not followed
yaml-syntax         error    malformed YAML; the rest of the file is not read
yaml-depth          error    nesting deeper than 64 levels; rest not read
yaml-alias          error    aliases beyond the budget (alias bomb); rest not read
yaml-key            error    a mapping key that is not a scalar; rest not read
yaml-duplicate-key  error    the same key twice in one mapping
yaml-tag            error    a YAML tag other than the core ones (!!str, !!int…)
not-a-mapping       error    a document (or List item) that is not a mapping
other-kind          info     a document of another apiVersion/kind; skipped
schema              error    breaks the JSON Schema (type, range, pattern,
                             required field…)
unknown-field       error    a field the schema does not define
image-ref           error    an image reference that breaks the grammar
duplicate-image     error    the same image twice in one cache, after
                             normalisation (nginx == docker.io/library/nginx:latest)
duplicate-name      error    two ImageCache documents with the same metadata.name
mutable-tag         warning  an image with tag `latest` or no tag and no digest;
                             or, once per cache, images held by a tag (no
                             digest) without a gitsync.io/refresh annotation
image-policy        error    a `# gitsync:` marker at the end of an image line
                             that cannot be read (policy, npm range, regex), on
                             a line of several images, or on an image pinned by
                             digest alone; a warning for a `# gitsync:` comment
                             anywhere else (ignored)
pull-secret         error    an imagePullSecrets entry that is not namespace/name
prune-annotation    error    gitsync.io/prune with a value other than `disabled`
reserved-key        error    a label or annotation gitsync writes for itself
                             (app.kubernetes.io/managed-by, gitsync.io/owner,
                             gitsync.io/applied-metadata)
annotation          error    eks.tke.cloud.tencent.com/eip-attributes that is
                             not "" or a JSON object of DeletePolicy (string),
                             InternetServiceProvider (string) and
                             InternetMaxBandwidthOut (integer >= 1); or
                             gitsync.io/refresh that is not a duration from 1s
                             to 36500d (Go's forms: 90s, 1h30m, 6h, 2d)
security-group      error    a securityGroupIds entry that is not a security
                             group id, sg- and lower-case letters or digits
=================== ======== ===================================================
"""

from __future__ import annotations

from typing import Final

from gitsync.specs.documents import _check_file as _check_file
from gitsync.specs.documents import _FileResult as _FileResult
from gitsync.specs.loading import FileCache as FileCache
from gitsync.specs.loading import LoadResult, load_repository
from gitsync.specs.pool import PARALLEL_MIN_FILES as PARALLEL_MIN_FILES
from gitsync.specs.pool import _worker_count as _worker_count
from gitsync.specs.reading import MAX_FILE_BYTES
from gitsync.specs.schema import SCHEMA_PATH, is_schema_valid, schema
from gitsync.specs.schema import _Validator as _Validator
from gitsync.specs.walk import YAML_SUFFIXES
from gitsync.specs.walk import _File as _File
from gitsync.specs.yaml_events import MAX_ALIAS_EXPANSION, MAX_ALIASES, MAX_DEPTH
from gitsync.specs.yaml_events import _documents as _documents
from gitsync.specs.yaml_events import _Loader as _Loader

__all__ = [
    "MAX_ALIASES",
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "RULES",
    "SCHEMA_PATH",
    "YAML_SUFFIXES",
    "LoadResult",
    "is_schema_valid",
    "load_repository",
    "schema",
]

RULES: Final = (
    "file-unreadable",
    "file-too-large",
    "file-encoding",
    "symlink-escape",
    "yaml-syntax",
    "yaml-depth",
    "yaml-alias",
    "yaml-key",
    "yaml-duplicate-key",
    "yaml-tag",
    "not-a-mapping",
    "other-kind",
    "schema",
    "unknown-field",
    "image-ref",
    "duplicate-image",
    "duplicate-name",
    "mutable-tag",
    "image-policy",
    "pull-secret",
    "prune-annotation",
    "annotation",
    "security-group",
    "reserved-key",
)
