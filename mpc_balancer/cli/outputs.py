"""Output options of the CLI, checked before any long run starts.

A file option (``--json``, ``--plot``, a cost table's ``--out``) must not be an existing file
unless ``--force`` is given, must not be a directory, and its directory must exist or be
creatable and writable (probed with a temporary file). A directory option (``--out DIR``) must be a directory (or not exist
yet) without files in it unless ``--force``, and writable. Every error names the option and the
path. The writes themselves are atomic (:func:`mpc_balancer.jsonio.write_json`).

The checks create a missing output directory (to probe it); a command that then fails or is
interrupted (Ctrl-C) leaves none of them behind empty: :func:`remove_created_dirs`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def declare_outputs(p, files=(), dirs=()) -> None:
    """Give the subcommand parser ``p`` a ``--force`` option and record which of its options are
    output files and directories; :func:`check_outputs` checks them before the command runs."""
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(output_files=tuple(files), output_dirs=tuple(dirs))


def check_outputs(args) -> None:
    """Check every declared output of the parsed command line (see the module doc).

    Two output options naming the same path (``--json r.out --plot r.out``, or ``--json X --out X``)
    are an error too: the second write would replace the first's output without a word, or (a file
    where the directory was made) fail after the whole run."""
    ns = vars(args)
    seen: dict[Path, str] = {}
    for opt in (*ns.get("output_files", ()), *ns.get("output_dirs", ())):
        value = ns.get(opt.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        key = Path(value).resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {opt} are the same file {value}; give each its own")
        seen[key] = opt
    for opt in ns.get("output_files", ()):
        check_file(opt, ns.get(opt.lstrip("-").replace("-", "_")), ns.get("force", False))
    for opt in ns.get("output_dirs", ()):
        check_dir(opt, ns.get(opt.lstrip("-").replace("-", "_")), ns.get("force", False))


_created: list[Path] = []  # the directories _writable_dir made, in order (see remove_created_dirs)


def created_dirs_mark() -> int:
    """A mark for :func:`remove_created_dirs`: the directories made after it are the command's."""
    return len(_created)


def remove_created_dirs(mark: int = 0) -> None:
    """Remove the directories the output checks made since ``mark`` that are still empty (a command
    that failed or was interrupted before writing into them), deepest first; a directory that holds
    anything is kept, as is every directory that existed before."""
    made, _created[mark:] = _created[mark:], []
    for path in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # only an empty directory goes
            path.rmdir()


def _writable_dir(option: str, path: Path, target: Path) -> None:
    """``path`` is a directory this process can create files in: created if missing, then probed
    with a temporary file (permission bits alone say nothing to root, or on a read-only mount).
    The directories created are recorded for :func:`remove_created_dirs`."""
    new = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{option} {target}: cannot write in {path} ({e.strerror or e})") from None
    finally:
        _created.extend(p.absolute() for p in reversed(new) if p.is_dir())


def check_file(option: str, value, force: bool) -> None:
    """A file output: see the module doc."""
    if value is None:
        return
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"{option} {value}: is a directory, expected a file name")
    if path.exists():
        if not force:
            raise ValueError(f"{option} {value}: file exists; pass --force to overwrite it")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{option} {value}: file is not writable")
    _writable_dir(option, path.parent if str(path.parent) else Path("."), path)


def check_dir(option: str, value, force: bool) -> None:
    """A directory output: see the module doc."""
    if value is None:
        return
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{option} {value}: is a file, expected a directory")
        if not force and any(path.iterdir()):
            raise ValueError(f"{option} {value}: directory is not empty; pass --force to overwrite its files")
    _writable_dir(option, path, path)
