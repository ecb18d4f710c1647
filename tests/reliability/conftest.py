"""The reliability suite reuses the integration suite's real registry fixtures.

pytest only applies a conftest's fixtures below its own folder, so the
registry fixtures of `tests/integration/conftest.py` are loaded here under a
module name of their own (a second `conftest` module would shadow the first
in `sys.modules`) and re-exported. Both folders put their helper modules on
`sys.path` the same way, which also works in pytest's importlib mode.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_INTEGRATION = _HERE.parent / "integration"
for folder in (_HERE, _INTEGRATION, _HERE.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _load_integration_conftest() -> object:
    name = "gitsync_integration_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _INTEGRATION / "conftest.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_INTEGRATION / 'conftest.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_integration = _load_integration_conftest()

# Re-exported fixtures: pytest finds them as attributes of this module.
registry_storage = _integration.registry_storage  # type: ignore[attr-defined]
registry = _integration.registry  # type: ignore[attr-defined]
basic_registry = _integration.basic_registry  # type: ignore[attr-defined]
pusher = _integration.pusher  # type: ignore[attr-defined]
