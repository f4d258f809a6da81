"""Comparison runner: reference voices x target models x prompts x repeats, resumable.

A run lives in one directory (``RUN_DIR``)::

    RUN_DIR/run.json        what was run, with which versions, where, when (never the API key)
    RUN_DIR/voices.json     the cloned voice used for each (reference voice, target model)
    RUN_DIR/turns.jsonl     ONE JSON row per finished turn, appended + fsync'd as each completes
    RUN_DIR/audio/<turn_id>.wav/.json   the reply audio and the whole Turn (Turn.save)
    RUN_DIR/results.parquet the consolidated table (qvtools.results.to_frame), written at the end
    RUN_DIR/prices.json     the price table the user supplied (optional; qvtools ships no prices)

:func:`replay` recomputes ``results.parquet`` from ``turns.jsonl`` and the saved turns (``audio/*.json``
+ ``.wav``) with no network, so a report of a cloud run can be rebuilt (``qvtools replay RUN_DIR``).
Nothing under RUN_DIR holds the API key.

Before a run against the cloud, :meth:`Experiment.billing_plan` says how many voices it will create (not
already in the registry) and how many turns it will run; ``qvtools compare`` asks for confirmation with it.

Resuming: every turn has a deterministic ``turn_id`` (voice, model, prompt, repeat). Re-running on the
same ``RUN_DIR`` reads ``turns.jsonl`` (a truncated last line -- a crash mid-write -- is dropped), skips
the turns already present and runs only the rest, so each turn appears exactly once. A crash or
Ctrl-C loses at most the turns in flight.

The per-turn work is the plain, picklable function :func:`run_turn_detached` on a :class:`TurnTask`, so
any ``concurrent.futures.Executor`` can run it (the default is a ``ThreadPoolExecutor``; a Dask
``distributed.Client.get_executor()`` runs turns on cluster workers, see :mod:`qvtools.cluster`). The task
carries the prompt and reference audio as bytes and the workers RETURN the row and the :class:`Turn`;
only the coordinating process writes under ``RUN_DIR`` (reply WAV + turn JSON first, then the journal row),
so workers need no access to the coordinator's files and the journal has one writer: each turn is recorded
exactly once, resume included, whatever the executor.

The package, by concern (issue 19): :mod:`~qvtools.experiment.spec` (voices, prompts, samples),
:mod:`~qvtools.experiment.journal` (file names, turn ids, ``turns.jsonl``, the all-or-nothing writers, all
through :func:`qvtools.rundir.write_atomic`), :mod:`~qvtools.experiment.turn` (one turn, picklable),
:mod:`~qvtools.experiment.scoring` (a turn's metrics and latency provenance), :mod:`~qvtools.experiment.billing`,
:mod:`~qvtools.experiment.provenance` (versions, git commit), :mod:`~qvtools.experiment.replay` and
:mod:`~qvtools.experiment.runner` (:class:`Experiment`). Every public name is importable from here.
"""

from __future__ import annotations

from .billing import (BILLING_RULE, FREE_QUOTA_DAYS, FREE_VOICE_CREATIONS, VOICE_CREATION_PRICE_USD, BillingPlan,
                      voice_creation_cost)
from .journal import (AUDIO_DIR, PRICES_FILE, RESULTS_FILE, RUN_FILE, TURNS_FILE, VOICES_FILE, _repair_tail,
                      _rewrite_rows, append_row, read_turns, turn_id)
from .replay import replay
from .runner import Experiment
from .scoring import DEFAULT_METRICS, _provenance, _score
from .spec import (DATA_DIR, PromptSpec, VoiceSpec, default_run_dir, load_prompts, load_voices, resolve_prompts,
                   resolve_voices, sample_prompts, sample_voices, speaks)
from .turn import TurnTask, run_turn, run_turn_detached, save_turn

__all__ = [
    "Experiment",
    "VoiceSpec",
    "PromptSpec",
    "TurnTask",
    "turn_id",
    "run_turn",
    "run_turn_detached",
    "save_turn",
    "read_turns",
    "append_row",
    "load_prompts",
    "load_voices",
    "speaks",
    "sample_voices",
    "sample_prompts",
    "resolve_voices",
    "resolve_prompts",
    "default_run_dir",
    "replay",
    "BillingPlan",
    "BILLING_RULE",
    "VOICE_CREATION_PRICE_USD",
    "FREE_VOICE_CREATIONS",
    "FREE_QUOTA_DAYS",
    "voice_creation_cost",
    "PRICES_FILE",
    "DATA_DIR",
    "DEFAULT_METRICS",
    "TURNS_FILE",
    "RUN_FILE",
    "VOICES_FILE",
    "RESULTS_FILE",
    "AUDIO_DIR",
]
