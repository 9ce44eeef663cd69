"""TPU slices as queued resources: the gcloud commands that request, watch and delete
them, and what an accelerator type means.

Google's documentation recommends queued resources for creating TPUs; with --spot the
request is for Spot capacity (cheaper, preemptible). One queued resource per slice,
with the node named like it:

  gcloud compute tpus queued-resources create NAME --node-id=NAME --zone=Z \
      [--project=P] --accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite \
      [--spot] --async
  gcloud compute tpus queued-resources describe NAME --zone=Z --format=value(state.state)
  gcloud compute tpus queued-resources delete NAME --zone=Z --force --quiet

A request goes through WAITING_FOR_RESOURCES (or ACCEPTED) and PROVISIONING to ACTIVE,
or to FAILED; a preempted Spot slice goes to SUSPENDING and SUSPENDED, and must be
deleted and requested again.
"""

from __future__ import annotations

import re
import subprocess

from . import tpu
from mobilenet_jax import errors

ACTIVE, SUSPENDED, FAILED = "ACTIVE", "SUSPENDED", "FAILED"
# The TPU software versions Google's runtime-version table gives for JAX.
RUNTIME_VERSIONS = {"v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5",
                    "v5litepod": "v2-alpha-tpuv5-lite", "v4": "tpu-ubuntu2204-base"}
# Devices (chips) JAX sees per number in the accelerator type: v5e and v6e count chips,
# v4 and v5p TensorCores (two per chip, one JAX device per chip).
_DEVICES_PER_UNIT = {"v6e": 1.0, "v5litepod": 1.0, "v5p": 0.5, "v4": 0.5}


class CloudError(errors.UserError):
  """A gcloud command failed."""


def parse_accelerator(accelerator: str) -> tuple[str, int]:
  """("v5litepod", 8) for "v5litepod-8"; ValueError for an unknown generation."""
  match = re.fullmatch(r"(v6e|v5p|v5litepod|v4)-(\d+)", accelerator)
  if not match:
    raise ValueError(
        f"--accelerator={accelerator!r}: expected <type>-<size> with a type of "
        f"{', '.join(RUNTIME_VERSIONS)} (e.g. v5litepod-8, v6e-8, v5p-8).")
  return match.group(1), int(match.group(2))


def runtime_version(accelerator: str) -> str:
  """The TPU software version Google recommends for JAX on `accelerator`."""
  return RUNTIME_VERSIONS[parse_accelerator(accelerator)[0]]


def chips(accelerator: str) -> int:
  """The JAX devices (chips) of a slice of `accelerator`."""
  generation, size = parse_accelerator(accelerator)
  return max(1, int(size * _DEVICES_PER_UNIT[generation]))


def create_command(tpu_slice: tpu.Slice, accelerator: str, runtime: str,
                   spot: bool) -> list[str]:
  """Requests `tpu_slice` as a queued resource (returns once the request is queued)."""
  return ["gcloud", "compute", "tpus", "queued-resources", "create", tpu_slice.name,
          f"--node-id={tpu_slice.name}", *tpu_slice.location_args(),
          f"--accelerator-type={accelerator}", f"--runtime-version={runtime}",
          *(["--spot"] if spot else []), "--async"]


def describe_command(tpu_slice: tpu.Slice) -> list[str]:
  """Prints the queued resource's state."""
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", tpu_slice.name,
          *tpu_slice.location_args(), "--format=value(state.state)"]


def delete_command(tpu_slice: tpu.Slice) -> list[str]:
  """Deletes the queued resource and its TPU VM (waits until they are gone)."""
  return ["gcloud", "compute", "tpus", "queued-resources", "delete", tpu_slice.name,
          *tpu_slice.location_args(), "--force", "--quiet"]


def _run(command: list[str]) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(command, capture_output=True, text=True, timeout=3600)
  except FileNotFoundError:
    raise CloudError("gcloud is not installed or not on PATH: install the Google Cloud "
                     "CLI (https://cloud.google.com/sdk/docs/install).") from None


def _last_line(result: subprocess.CompletedProcess) -> str:
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  return lines[-1] if lines else f"exit status {result.returncode}"


def state(tpu_slice: tpu.Slice) -> str | None:
  """The queued resource's state, or None if there is none."""
  result = _run(describe_command(tpu_slice))
  if result.returncode == 0:
    return result.stdout.strip() or "UNKNOWN"
  if "NOT_FOUND" in result.stderr:
    return None
  raise CloudError(f"queued resource {tpu_slice.name}: {_last_line(result)}")


def create(tpu_slice: tpu.Slice, accelerator: str, runtime: str, spot: bool) -> None:
  """Requests the slice."""
  result = _run(create_command(tpu_slice, accelerator, runtime, spot))
  if result.returncode != 0:
    raise CloudError(f"requesting {tpu_slice.name} ({accelerator} in {tpu_slice.zone}) "
                     f"failed: {_last_line(result)}")


def delete(tpu_slice: tpu.Slice) -> None:
  """Deletes the slice's queued resource and VM, if there are any."""
  result = _run(delete_command(tpu_slice))
  if result.returncode != 0 and "NOT_FOUND" not in result.stderr:
    raise CloudError(f"deleting {tpu_slice.name} failed: {_last_line(result)}; delete "
                     f"it yourself: {' '.join(delete_command(tpu_slice))}")
