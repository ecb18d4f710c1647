"""Where desired state comes from: git repositories and local folders."""
