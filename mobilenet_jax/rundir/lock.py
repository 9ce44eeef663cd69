"""One writer per run directory: WORKDIR/run.lock.

A trainer (or an import that writes a run) holds the lock for its lifetime. On a local
file system the lock is an `flock` on the file, which the kernel releases when its
holder dies however it dies, so a dead holder's lock is simply taken over (with a
note naming it); the file's text (host, PID, role, start time) names the holder for
the message a second writer gets. Readers (evaluate, predict, export, compare) take no
lock.

A sweep launcher takes a point's lock before it starts the trainer and hands the
locked file to it (`held_for_child`: the fd and an environment variable naming it,
which the trainer's `acquire` adopts). The trainer spends ~20 s importing JAX and
checking its config and data before it would reach the lock; taking it first means
two launchers on one root can never both start a point. Until the trainer adopts it,
the note names the launcher (role "launcher").

On object storage (gs://) there is no flock: the file's presence is the lock, held as a
lease. Its holder renews the note every `RENEW_S`; a note not renewed for `LEASE_S` is
a dead holder's (a TPU VM preempted before its trainer could release it) and the next
writer takes it over with a note. A sweep launcher that saw the slice under a point
vanish clears that point's lock at once (`clear_lost_holder`), so the re-queued point
need not wait out the lease. A second writer within the lease is refused, the holder
named, with when the lease lapses and how to clear a dead one's lock now.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import threading
from typing import Iterator

from mobilenet_jax.errors import ConfigError, UserError
from mobilenet_jax.rundir import layout


class RunLockedError(UserError):
  """Another live process is training in this run directory."""
  # EX_TEMPFAIL ("try again later"): a script running trainers tells this apart from
  # a failed run.
  exit_status = 75

  def __init__(self, message: str, holder: str):
    super().__init__(message)
    self.holder = holder  # "trainer PID 123 on host, started ...": a launcher's line.


# Names the fd of a run lock a launcher took for this process (`held_for_child`).
HANDOFF_ENV = "MOBILENET_JAX_RUN_LOCK_FD"
LAUNCHER = "launcher"  # The note's role while a launcher holds the lock for a trainer.
# Object storage: how often a holder renews its note, and how long a note may go
# unrenewed before it counts as a dead holder's. The lease outlasts any pause of the
# renewing thread (it runs beside compiles and saves) many times over.
RENEW_S = 60
LEASE_S = 600


def _on_object_storage(workdir) -> bool:
  """gs:// and the like: no flock there, the lock is a lease (see the module doc)."""
  return "://" in str(workdir)


def _now() -> datetime.datetime:
  return datetime.datetime.now().astimezone()


def _holder_text(role: str = "trainer", started: str | None = None) -> str:
  """The note: who holds the lock, since when; object storage's also says when it was
  last `renewed` (pass `started` to renew a note)."""
  now = _now().isoformat(timespec="seconds")
  note = {"host": socket.gethostname(), "pid": os.getpid(), "role": role,
          "started": started or now}
  if started:
    note["renewed"] = now
  return json.dumps(note)


def _lease_end(text: str) -> datetime.datetime | None:
  """When an object-storage note's lease lapses: its last renewal (or start) plus
  LEASE_S; None for a note that cannot be read (never taken over unasked)."""
  try:
    holder = json.loads(text)
    renewed = datetime.datetime.fromisoformat(holder.get("renewed") or holder["started"])
  except (ValueError, KeyError, TypeError, AttributeError):
    return None
  return renewed.astimezone() + datetime.timedelta(seconds=LEASE_S)


def _write_note(fd: int, role: str) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, _holder_text(role).encode(), 0)


def _describe(text: str) -> str:
  """"trainer PID 12 on host, started T" (or the launcher that holds it for one)."""
  try:
    holder = json.loads(text)
    who = f"PID {holder['pid']} on {holder['host']}"
    if holder.get("role") == LAUNCHER:
      return (f"sweep launcher {who}, starting the point's trainer since "
              f"{holder['started']}")
    return f"trainer {who}, started {holder['started']}"
  except (ValueError, KeyError, TypeError):
    return "an unknown process"


def _workdir_error(workdir, error: OSError) -> ConfigError:
  reason = os.strerror(error.errno) if error.errno else str(error)
  return ConfigError(f"--workdir={workdir}: cannot write the run directory ({reason}); "
                     "choose a writable directory.")


def ensure_writable_workdir(workdir) -> None:
  """Makes a local WORKDIR (and its parents), or raises the ConfigError saying why it
  cannot be a run directory: empty, a file, or not writable.

  The trainer's first step, before TensorFlow and the devices load, so that a wrong
  --workdir is said in a second; the lock repeats the write check when it opens its
  file. Object storage needs no directory: only the name is checked there.
  """
  if not str(workdir or "").strip():
    raise ConfigError("--workdir is empty: name the run directory, e.g. "
                      "--workdir=runs/my_run.")
  if _on_object_storage(workdir):
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a directory: choose another "
                      "--workdir.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise _workdir_error(workdir, error) from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise _workdir_error(workdir, PermissionError(errno.EACCES, "Permission denied"))


def live_holder(workdir) -> str | None:
  """Who holds WORKDIR's lock, if a live process on this host does; else None.

  Reads the holder's note and asks the kernel whether its PID runs, and started before
  the note (else the PID is a later process's); takes no lock, so a probe never makes a
  trainer starting at that instant fail. None for object storage and for holders on
  other hosts: the trainer's own `acquire` decides there.
  """
  if _on_object_storage(workdir):
    return None
  try:
    text = layout.lock_path(workdir).read_text()
    holder = json.loads(text)
    pid, host = int(holder["pid"]), holder["host"]
  except (OSError, ValueError, KeyError, TypeError):
    return None  # No lock file, or an empty one: released.
  if host != socket.gethostname() or _started_after(pid, holder.get("started")):
    return None
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return None  # Died holding it: the next trainer takes it over.
  except PermissionError:
    pass  # Alive, another user's.
  return _describe(text)


def _started_after(pid: int, noted: str | None) -> bool:
  """Whether process PID started after the time a note records: then it is not the
  note's writer but a later process given its PID. False where /proc cannot tell."""
  try:
    noted_s = datetime.datetime.fromisoformat(noted).timestamp()
    with open(f"/proc/{pid}/stat") as f:  # Field 22: start time, ticks after boot.
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
      boot_s = next(int(line.split()[1]) for line in f if line.startswith("btime "))
  except (OSError, ValueError, TypeError, IndexError, StopIteration):
    return False
  # The note is written after its writer starts; 2 s covers btime's whole seconds.
  return boot_s + start_ticks / os.sysconf("SC_CLK_TCK") > noted_s + 2


@contextlib.contextmanager
def held_for_child(workdir) -> Iterator[tuple[dict[str, str], tuple[int, ...]]]:
  """Holds WORKDIR's lock for a trainer this process starts inside the block:
  yields (env, fds) for `Popen(..., env=os.environ | env, pass_fds=fds)`, which the
  trainer's `acquire` adopts; gives back whatever the trainer left held on exit.
  RunLockedError if another live writer holds it. On object storage it takes nothing
  (the lock there is a file the trainer itself writes): ({}, ()).
  """
  if _on_object_storage(workdir):
    yield {}, ()
    return
  held = RunLock(workdir, role=LAUNCHER).acquire()  # Its note, until the trainer adopts.
  try:
    yield {HANDOFF_ENV: str(held._fd)}, (held._fd,)
  finally:
    held.release_after_child()


class RunLock:
  """`with RunLock(workdir):` holds WORKDIR/run.lock, or raises RunLockedError.

  `role` is what the note calls the holder: a trainer, or a launcher holding the lock
  for the trainer it starts (`held_for_child`).
  """

  def __init__(self, workdir, role: str = "trainer"):
    self._workdir = str(workdir)
    self._role = role
    self._path = layout.lock_path(workdir)
    self._fd: int | None = None
    self._note: str | None = None  # Object storage: the note this process last wrote.
    self._released = threading.Event()
    self._renewer: threading.Thread | None = None

  def acquire(self) -> "RunLock":
    """Takes the lock; RunLockedError naming the holder if a live one has it."""
    if _on_object_storage(self._workdir):
      return self._acquire_remote()
    if self._adopt_handed_lock():
      return self
    try:
      os.makedirs(self._workdir, exist_ok=True)
      fd = os.open(str(self._path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
      raise _workdir_error(self._workdir, error) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = os.read(fd, 4096).decode("utf-8", "replace")
      os.close(fd)
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise _workdir_error(self._workdir, error) from None
      raise RunLockedError(
          f"{self._workdir} is in use by another run ({_describe(holder)}); wait "
          "for it to finish, stop it, or choose another --workdir.",
          _describe(holder)) from None
    previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if previous:
      logging.warning("Took over %s from a writer that did not release it (%s; it is "
                      "no longer running).", self._path, _describe(previous))
    _write_note(fd, self._role)
    self._fd = fd
    return self

  def _acquire_remote(self) -> "RunLock":
    if self._path.exists():
      previous = self._path.read_text()
      holder, lease_end = _describe(previous), _lease_end(previous)
      if lease_end is None or lease_end > _now():
        lapses = (f"its lock lapses at {lease_end.isoformat(timespec='seconds')} "
                  f"({LEASE_S // 60} min after its last renewal) and a run started "
                  "then takes it over; or " if lease_end else "")
        raise RunLockedError(
            f"{self._workdir} is in use by another run ({holder}); if that process is "
            f"gone, {lapses}delete {self._path} and run again.", holder)
      logging.warning("Took over %s from a writer that stopped renewing it (%s; its "
                      "lease lapsed at %s: it is no longer running).", self._path,
                      holder, lease_end.isoformat(timespec="seconds"))
    self._path.parent.mkdir(parents=True, exist_ok=True)
    self._note = _holder_text(self._role)
    self._path.write_text(self._note)
    self._renewer = threading.Thread(target=self._renew_until_released, daemon=True,
                                     name="run-lock-renewal")
    self._renewer.start()
    return self

  def _renew_until_released(self) -> None:
    """Object storage: renews the note every RENEW_S while this process holds it."""
    while not self._released.wait(RENEW_S):
      try:
        if not self._renew_once():
          return
      except Exception as error:  # pylint: disable=broad-except
        # A storage hiccup (gs:// raises its own error types): the lease outlasts
        # several missed renewals, so say so and try again next time.
        logging.warning("Could not renew the run lock %s (%s); retrying in %d s.",
                        self._path, error, RENEW_S)

  def _renew_once(self) -> bool:
    """Rewrites the note with a new renewal time; False (and an error logged) if it is
    no longer this process's note."""
    current = self._path.read_text() if self._path.exists() else ""
    if current != self._note:
      logging.error("The run lock %s is no longer this process's (it names %s now): a "
                    "launcher cleared it or another writer took it over; stop one of "
                    "the two runs.", self._path, _describe(current))
      return False
    self._note = _holder_text(self._role, json.loads(self._note)["started"])
    self._path.write_text(self._note)
    return True

  def _adopt_handed_lock(self) -> bool:
    """Takes over the locked fd a launcher handed to this process, if it is this
    workdir's lock; the note then names this process."""
    handed = os.environ.get(HANDOFF_ENV)
    if not handed:
      return False
    try:
      fd = int(handed)
      same_file = os.path.samestat(os.fstat(fd), os.stat(self._path))
    except (ValueError, OSError):
      return False
    if not same_file:
      return False  # Handed for another workdir: this one is taken as usual.
    del os.environ[HANDOFF_ENV]  # Neither a second RunLock nor a child adopts it.
    os.set_inheritable(fd, False)
    _write_note(fd, self._role)
    self._fd = fd
    return True

  def release_after_child(self) -> None:
    """Releases a lock handed to a child that has exited: what it left held (it died
    without releasing, or never reached its own `acquire`) is emptied and given back;
    if the child released it and another writer has it now, that one keeps it."""
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Still ours, or free.
    except OSError:
      os.close(self._fd)
      self._fd = None
      return
    self.release()

  def release(self) -> None:
    """Gives the lock back (empties the file: no holder)."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    elif self._renewer is not None:
      self._released.set()
      self._renewer.join()
      self._renewer = None
      # Only our own note: after a takeover the lock is the new holder's.
      if self._path.exists() and self._path.read_text() == self._note:
        self._path.unlink(missing_ok=True)

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def clear_lost_holder(workdir) -> str | None:
  """Deletes WORKDIR's object-storage lock, for a caller that knows its holder is gone
  (a launcher whose TPU slice vanished under the point), so that the next trainer need
  not wait out the lease; returns who held it, or None. Local locks need nothing: the
  kernel gave back a dead holder's flock."""
  path = layout.lock_path(workdir)
  if not _on_object_storage(workdir) or not path.exists():
    return None
  holder = _describe(path.read_text())
  path.unlink(missing_ok=True)
  return holder
