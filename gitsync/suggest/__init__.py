"""`gitsync suggest`: cache changes proposed from observed lookups, as reviewed Git changes.

`model` is the shared vocabulary; `engine` decides (pure), `reports` formats,
`edits` turns a suggestion into edited YAML text that keeps everything else,
and `validation` loads the edited tree before anything is written.
"""
