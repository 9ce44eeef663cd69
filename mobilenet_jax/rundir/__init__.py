"""A run directory (a training run's workdir): its layout, checkpoints, results,
identity and lock.

The bottom of the house: training, tools, import and experiments read and write a run
directory through these modules, and they import nothing of theirs. One concern each:

  layout            every file name of a run directory, and paths to them
  results           results.json: the schema, atomic write, safe read, is_finished
  metrics_file      metrics.jsonl: append, rewrite on resume, torn-tail tolerant read
  identity          what a run computes; which configs may resume its checkpoints
  lock              one writer per run directory
  checkpoint_store  Orbax: how a step is laid out, read and checked
  checkpointer      the writer: async saves, resume from the newest good step
  readers           configs and weights for tools, without a lock
  orbax_quiet       Orbax's console noise, filtered

Import the module you need (`from mobilenet_jax.rundir import results`): reading
results needs neither JAX's devices nor Orbax.
"""
