"""The code a TPU launch ships to the workers: HEAD, or the working tree as it is.

A clean tree ships `git archive HEAD` and is named by its commit. A dirty tree (edits to
tracked files, or untracked files git does not ignore) is never silently replaced by
HEAD: with `--dirty=ship` the tarball is built from the working tree itself (tracked
and untracked, not ignored, files as they are on disk) and named
`<commit>-dirty-<content hash>`, so that two different dirty trees never share a name;
with `--dirty=refuse` the launch stops with one line that lists what is uncommitted.
The manifest records which (`CodeVersion.to_json`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import subprocess
import tarfile

from mobilenet_jax import errors

REPO = pathlib.Path(__file__).resolve().parent.parent
DIRTY_POLICIES = ("refuse", "ship")


class DirtyTreeError(errors.UserError):
  """The working tree has uncommitted changes and --dirty=refuse."""


@dataclasses.dataclass(frozen=True)
class CodeVersion:
  """What would be shipped: HEAD's commit and, for a dirty tree, what differs."""
  commit: str | None  # None outside a git checkout.
  changed: tuple[str, ...] = ()  # Uncommitted paths (git status), empty when clean.
  content_hash: str | None = None  # Of the working tree's files, when dirty.
  package_version: str = ""

  @property
  def dirty(self) -> bool:
    return bool(self.changed)

  @property
  def name(self) -> str:
    """The version's name: the commit, `<commit>-dirty-<hash>`, or the package's."""
    if self.commit is None:
      return self.package_version
    return f"{self.commit}-dirty-{self.content_hash[:12]}" if self.dirty else self.commit

  def to_json(self) -> dict:
    """What the manifest records about the code."""
    return {"name": self.name, "commit": self.commit, "dirty": self.dirty,
            "shipped": "working tree" if self.dirty else "HEAD",
            "content_hash": self.content_hash, "uncommitted": list(self.changed)}


def _git(repo, *args: str) -> str:
  return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                        check=True).stdout


def _tree_files(repo) -> list[str]:
  """Tracked and untracked, not ignored, files that exist, sorted."""
  listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
  return sorted({p for p in listed.split("\0")
                 if p and os.path.isfile(os.path.join(repo, p))})


def _content_hash(repo, files: list[str]) -> str:
  digest = hashlib.sha256()
  for path in files:
    full = os.path.join(repo, path)
    executable = os.access(full, os.X_OK)
    with open(full, "rb") as f:
      content = hashlib.sha256(f.read()).hexdigest()
    digest.update(f"{path}\0{int(executable)}\0{content}\n".encode())
  return digest.hexdigest()


def _status_paths(status: str) -> set[str]:
  """The paths of `git status --porcelain -z`: "XY path" entries, a rename's or
  copy's ("R  new", then the old name alone) counted once as the new name."""
  entries, paths = iter(status.split("\0")), set()
  for entry in entries:
    if len(entry) > 3:
      paths.add(entry[3:])
      if entry[0] in "RC":
        next(entries, None)
  return paths


def inspect(repo=REPO) -> CodeVersion:
  """The code version of `repo`'s working tree (offline: git only)."""
  import mobilenet_jax  # pylint: disable=g-import-not-at-top
  try:
    commit = _git(repo, "rev-parse", "--short=12", "HEAD").strip()
    status = _git(repo, "status", "--porcelain", "-z", "--untracked-files=all")
  except (OSError, subprocess.CalledProcessError):
    return CodeVersion(None, package_version=mobilenet_jax.__version__)
  changed = tuple(sorted(_status_paths(status)))
  content_hash = _content_hash(repo, _tree_files(repo)) if changed else None
  return CodeVersion(commit, changed, content_hash, mobilenet_jax.__version__)


def check(version: CodeVersion, policy: str) -> None:
  """Raises DirtyTreeError for a dirty tree under --dirty=refuse."""
  if version.dirty and policy == "refuse":
    shown = ", ".join(version.changed[:3])
    more = f" and {len(version.changed) - 3} more" if len(version.changed) > 3 else ""
    raise DirtyTreeError(
        f"the working tree has uncommitted changes ({shown}{more}) and would not be "
        f"the code at commit {version.commit}: commit them, or pass --dirty=ship to "
        f"ship the working tree as it is (as {version.commit}-dirty-"
        f"{version.content_hash[:12]}).")


def archive_name(version: CodeVersion) -> str:
  """The tarball's file name."""
  return f"mobilenet-jax-{version.name}.tar.gz"


def build_command(version: CodeVersion) -> str:
  """A shell command equivalent to `build` (what a dry run prints)."""
  name = archive_name(version)
  if not version.dirty:
    return f"git archive --format=tar.gz -o {name} HEAD"
  return ("git ls-files -z --cached --others --exclude-standard | "
          f"tar --null -czf {name} -T -")


def build(version: CodeVersion, directory: str, policy: str, repo=REPO) -> str:
  """Writes the code tarball into `directory`; returns its path.

  Raises:
    DirtyTreeError: the tree is dirty and `policy` is "refuse".
  """
  check(version, policy)
  if version.commit is None:
    raise errors.UserError(f"{repo} is not a git checkout: TPU launches ship the code "
                           "of a clone (git clone the repository and launch from it).")
  path = os.path.join(directory, archive_name(version))
  if not version.dirty:
    _git(repo, "archive", "--format=tar.gz", "-o", path, "HEAD")
    return path
  # Deterministic members (sorted, no owners or times): the name's hash is the content's.
  with tarfile.open(path, "w:gz") as tar:
    for rel in _tree_files(repo):
      full = os.path.join(repo, rel)
      with open(full, "rb") as f:
        data = f.read()
      info = tarfile.TarInfo(rel)
      info.size, info.mode = len(data), 0o755 if os.access(full, os.X_OK) else 0o644
      tar.addfile(info, io.BytesIO(data))
  return path


def read_file(version: CodeVersion, path: str, repo=REPO) -> bytes:
  """`path` as the shipped code has it (HEAD's for a clean tree, else the disk's)."""
  if version.commit is not None and not version.dirty:
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=repo, check=True,
                          capture_output=True).stdout
  return (pathlib.Path(repo) / path).read_bytes()
