"""`gitsync suggest`: cache changes proposed from observed lookups, as reviewed Git changes.

`model` is the shared vocabulary; `engine` decides (pure), `reports` formats,
`edits` turns a suggestion into edited YAML text that keeps everything else,
and `validation` loads the edited tree before anything is written. Those four
are the package's front doors, independent of one another; behind `engine`
and `edits` each concern has a module of its own, importing only those below
it (an import-linter contract in pyproject.toml keeps them so).

The decision (`engine`'s docstring states its rules), from the top:

* `engine`: the rules run in order, policy bumps merged, the result ranked.
* `newcache`: leftovers grouped by start, named, placed in a directory;
  `removals`: the remove-cache rule.
* `sizes`: what a cache's images need; a new cache's size, the resize rule.
* `pending`: the bump-tag and add-image rules, changes to existing caches.
* `unserved`: which pulled images no cache serves; `value`: saved seconds,
  evidence sums and cost.
* `wording`: the phrases reasons (and `reports`) share.
* `context`: the input checked and indexed once; reference parsing.

The edits (`edits`' docstring says what each kind changes), from the top:

* `edits`: suggestions applied in turn, each outcome reported.
* `textedits`: each kind's edit of an existing cache; `newfile`: a new
  cache's file in the repository's style.
* `recheck`: an edit and the re-read check it must pass.
* `spelling`: references and scalars written as the file writes them.
* `locate`: documents, nodes and their spans, from PyYAML's marks.

`model` is at the bottom of both.
"""
