"""``qvtools`` command line: thin faces over the library, no logic of its own.

``main(argv) -> int``; errors from qvtools are printed as one line on stderr with exit
status 2 (never a traceback). Subcommands are registered in :data:`COMMANDS` (name ->
builder adding its parser to the subparsers).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable

from .errors import QVError

__all__ = ["main", "run", "COMMANDS", "build_parser"]

#: name -> builder(subparsers) that adds the subcommand and sets ``func(args) -> int`` as its default.
COMMANDS: dict[str, Callable] = {}


def command(name: str):
    def deco(builder):
        COMMANDS[name] = builder
        return builder

    return deco


def _out(text: str = "") -> None:
    print(text, flush=True)


# -- check / prepare ---------------------------------------------------------------------------------
@command("check")
def _build_check(sub):
    p = sub.add_parser("check", help="check recordings against the enrollment audio rules")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--text", help="transcript (adds a speaking-rate row and an offline-ASR transcript_match row)")
    p.add_argument("--language", help="language code of the recording (en, zh, ...) for transcript_match; "
                   "default: detected")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from .preflight import check

    failed = False
    for path in args.files:
        report = check(path, transcript=args.text, language=args.language)
        _out(f"== {path}: {report.status}")
        _out(report.to_text())
        failed = failed or not report.ok
    return 1 if failed else 0


@command("prepare")
def _build_prepare(sub):
    p = sub.add_parser("prepare", help="make an enrollment-ready 16-bit WAV from a recording")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--allow-upsample", action="store_true", help="upsample recordings below 24 kHz")
    p.set_defaults(func=_prepare)


def _prepare(args) -> int:
    from pathlib import Path

    from .preflight import prepare

    from .rundir import write_atomic

    clip = prepare(args.input, allow_upsample=args.allow_upsample)
    write_atomic(Path(args.output), clip.wav)  # all or nothing; an error names the path
    for note in clip.notes:
        _out(f"note: {note}")
    _out(f"wrote {args.output} ({clip.duration_s:.1f} s at {clip.sample_rate} Hz): {clip.report.status}")
    return 0 if clip.report.ok else 1


# -- voices ------------------------------------------------------------------------------------------
@command("voices")
def _build_voices(sub):
    from .catalog import ENROLLMENT_TARGET_MODELS, VOICE_KINDS

    p = sub.add_parser("voices", help="create, list and delete cloned voices")
    vs = p.add_subparsers(dest="voices_cmd", required=True, metavar="{create,list,delete,purge}")
    c = vs.add_parser("create", help="enroll a voice from a recording")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--name", required=True, help="preferred_name: 1-16 letters, digits or _")
    c.add_argument("--model", required=True, metavar="TARGET_MODEL",
                   help=f"target realtime model ({', '.join(ENROLLMENT_TARGET_MODELS)}; other names are sent "
                   "with a warning: the service decides)")
    c.add_argument("--language", help="language code of the recording (en, zh, ...)")
    c.add_argument("--text", help="transcript of the recording")
    c.add_argument("--force", action="store_true", help="upload even when the preflight fails")
    c.set_defaults(func=_voices_create)
    ls = vs.add_parser("list", help="list every voice of the account (Omni and TTS clones, with their kind)")
    ls.set_defaults(func=_voices_list)
    d = vs.add_parser("delete", help="delete a voice")
    d.add_argument("voice", metavar="VOICE")
    d.set_defaults(func=_voices_delete)
    pg = vs.add_parser("purge", help="delete the Omni clones whose name starts with a prefix (asks first)")
    pg.add_argument("--prefix", required=True)
    pg.add_argument("--kind", dest="kinds", action="append", choices=VOICE_KINDS, metavar="KIND",
                    help=f"voice kind to delete ({', '.join(VOICE_KINDS)}; repeatable; default omni). TTS clones "
                    "share the enrollment list and are never deleted unless named here")
    pg.add_argument("--all-kinds", action="store_true", help="delete matching voices of every kind")
    pg.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pg.set_defaults(func=_voices_purge)


def _workspace():
    from .workspace import connect

    return connect()


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _kind_counts(voices) -> str:
    from collections import Counter

    counts = Counter(v.kind for v in voices)
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def _voices_create(args) -> int:
    from .enrollment import FALLBACK_ADVICE

    with _workspace() as ws:
        voice = ws.voices.create(args.file, args.model, args.name, language=args.language, text=args.text,
                                 force=args.force)
        _out(voice.voice)
        if voice.fallback_mode:
            _err(f"warning: {voice.voice} is a degraded clone (fallback_mode, reason "
                 f"{voice.fallback_reason or 'not given'}): {FALLBACK_ADVICE}")
    return 0


def _voices_list(args) -> int:
    with _workspace() as ws:
        voices = []
        for v in ws.voices.list():
            _out(f"{v.voice}\t{v.target_model or ''}\t{v.kind}\t{v.gmt_create or ''}\t{v.language or ''}")
            voices.append(v)
        _err(f"{len(voices)} voice(s) ({_kind_counts(voices)}) — {ws.describe()}")
    return 0


def _voices_delete(args) -> int:
    with _workspace() as ws:
        ws.voices.delete(args.voice)
        _out(f"deleted {args.voice}")
    return 0


def _voices_purge(args) -> int:
    from .catalog import VOICE_KINDS

    kinds = tuple(VOICE_KINDS) if args.all_kinds else tuple(dict.fromkeys(args.kinds or ("omni",)))
    with _workspace() as ws:
        matches = ws.voices.select(args.prefix, all_kinds=True)
        chosen = [v for v in matches if v.kind in kinds]
        kept = [v for v in matches if v.kind not in kinds]
        if kept:
            _out(f"keeping {len(kept)} matching voice(s) of other kinds ({_kind_counts(kept)}); "
                 "name them with --kind to delete them too")
        if not chosen:
            _out("no voice to delete")
            return 0
        for v in chosen:
            _out(f"{v.voice}\t{v.kind}\t{v.target_model or ''}")
        _out(f"{len(chosen)} voice(s) to delete ({_kind_counts(chosen)})")
        if not args.yes:
            try:
                answer = input(f"delete these {len(chosen)} voice(s)? [y/N] ").strip().lower()
            except (EOFError, OSError, RuntimeError):  # no stdin to ask on
                _out("no answer (stdin closed): nothing deleted; pass --yes to delete without asking")
                return 1
            if answer not in ("y", "yes"):
                _out("nothing deleted")
                return 1
        deleted = ws.voices.purge(args.prefix, kinds=kinds, voices=chosen)
        for name in deleted:
            _out(f"deleted {name}")
        _out(f"{len(deleted)} voice(s) deleted")
    return 0


# -- serve -------------------------------------------------------------------------------------------
@command("serve")
def _build_serve(sub):
    p = sub.add_parser("serve", help="run the offline local service until Ctrl+C / SIGTERM")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    p.add_argument("--data-dir", help="where voices are stored (default: the qvtools data dir)")
    p.add_argument("--api-key", help="accept only this key (default: any non-empty Bearer key)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="service log level on stderr (default info: one line per request error)")
    p.add_argument("--latency-from", metavar="RUN_DIR|results.parquet",
                   help="replay a measured run's latencies (per target model, seeded) instead of the simulated "
                        "profiles (ServiceConfig.latency_from)")
    p.add_argument("--latency-pool", action="store_true",
                   help="with --latency-from: a model the run has no turns of draws from all its turns "
                        "(default: its sessions are refused)")
    p.add_argument("--fault-ending", choices=("model_error", "param_error", "bare_close"),
                   help="rehearse a §7.24 session ending (fault injection, every key): COMMON_ERROR + close 1011, "
                        "an error + close 1007, or a bare close after speech_stopped")
    p.add_argument("--fault-turn", type=int, default=1, metavar="N", help="with --fault-ending: on the Nth turn "
                   "of a session (default 1)")
    p.add_argument("--fault-sessions", type=int, metavar="N", help="with --fault-ending: only the first N "
                   "sessions (default: every session)")
    p.set_defaults(func=_serve)


def _configure_service_logging(level_name: str) -> None:
    """Service logs on stderr, one line per record (issue 13: warnings were invisible while aiohttp
    tracebacks flooded stderr). aiohttp's own loggers stay at WARNING unless ``debug`` is asked for."""
    import logging

    level = getattr(logging, level_name.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("aiohttp", "asyncio"):
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


def _serve(args) -> int:
    from pathlib import Path

    from .config import Settings
    from .errors import ConfigError
    from .server import ServiceConfig, serve_forever

    if args.latency_pool and not args.latency_from:
        raise ConfigError("--latency-pool needs --latency-from RUN_DIR|results.parquet")
    _configure_service_logging(args.log_level)
    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir / "service"
    faults = None
    if args.fault_ending:
        from .server.faults import FaultPlan

        try:
            faults = {"*": FaultPlan(end_session=args.fault_ending, end_on_turn=args.fault_turn,
                                     times=args.fault_sessions)}
        except ValueError as exc:
            raise ConfigError(f"--fault-*: {exc}") from None
    config = ServiceConfig(latency_from=args.latency_from, latency_from_pool=args.latency_pool, faults=faults)
    serve_forever(host=args.host, port=args.port, data_dir=data_dir, api_key=args.api_key, config=config,
                  on_ready=lambda svc: _out(svc.url))
    return 0


# -- talk --------------------------------------------------------------------------------------------
@command("talk")
def _build_talk(sub):
    p = sub.add_parser("talk", help="one realtime turn: send a recorded utterance, save the spoken reply "
                       "(WAV + turn JSON) and print transcripts and latencies")
    p.add_argument("--voice", required=True, help="a built-in voice (e.g. Tina) or a cloned voice name")
    p.add_argument("--model", required=True, help="realtime model, e.g. qwen3.5-omni-plus-realtime")
    p.add_argument("--input", required=True, metavar="AUDIO", help="the user's utterance (WAV/MP3/... file)")
    p.add_argument("--out", required=True, metavar="REPLY.wav",
                   help="where the reply audio goes; the turn JSON is written next to it (REPLY.json)")
    p.add_argument("--manual", action="store_true",
                   help="no server VAD: commit and request the response right after the audio")
    p.add_argument("--semantic-vad", action="store_true",
                   help="turn_detection semantic_vad (qwen3.5+, §7.23): a turn the service does not accept ends "
                        "'rejected' (the local service's rule is its own imitation)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="stream the audio at real-time pace, like a microphone (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false", help="send the audio as fast as possible")
    p.add_argument("--instructions", help="system instructions for the session")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply (default 60)")
    p.set_defaults(func=_talk)


def _fmt_ms(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.0f} ms"  # None or NaN (a missing mark)


def _talk(args) -> int:
    from pathlib import Path

    from .audio import load
    from .errors import redact
    from .errors import ConfigError

    out = Path(args.out)
    if out.suffix.lower() != ".wav":
        raise ConfigError(f"--out must name a .wav file (the turn JSON goes next to it), got {args.out!r}")
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    clip = load(args.input, mono=True)  # bad input fails here, before connecting
    _warn_models([args.model])
    with _workspace() as ws:
        print(ws.describe(), file=sys.stderr, flush=True)
        turn_detection = _turn_detection(args)
        session = ws.realtime(args.model, voice=args.voice, instructions=args.instructions,
                              turn_detection=turn_detection)  # a voice/model mismatch stops here
        ws.wait_ready()  # a fresh embedded service: keep its one-time model loading out of the latencies
        with session as rt:
            turn = rt.send_audio(clip, realtime=args.realtime, manual=args.manual, timeout=args.timeout)
        simulated = ws.is_local
        source = rt.service_info.get("latency_source")  # the local service says where its delays come from
    wav, js = turn.save(out.with_suffix(""))
    lat = turn.latency()
    _out(f"user:      {turn.user_transcript or '(no transcript)'}")
    _out(f"assistant: {turn.assistant_transcript or '(no transcript)'}")
    _out(f"latency from end of user speech: first audio {_fmt_ms(lat['ttfa_ms'])}, "
         f"first text {_fmt_ms(lat['ttft_ms'])}, response.done {_fmt_ms(lat['e2e_ms'])}")
    _out(f"latency from response.created:   first audio {_fmt_ms(lat['ttfa_created_ms'])}, "
         f"first text {_fmt_ms(lat['ttft_created_ms'])}")
    pacing = "at real-time pace (like a microphone)" if args.realtime else "as fast as possible"
    if args.manual:
        how = "manual turn (commit + response.create right after the audio): no VAD wait included"
    elif args.semantic_vad:
        how = ("semantic VAD ended the turn: the latencies from end of user speech INCLUDE its silence window "
               "(the response.created figures do not)")
    else:
        how = ("server VAD ended the turn: the latencies from end of user speech INCLUDE its silence window "
               "(the response.created figures do not)")
    _out(f"measured on this client from the last audio chunk holding speech; audio sent {pacing}; {how}")
    if simulated:
        _out("note: local service -- these latencies are SIMULATED, not measurements of the real models"
             + (f" (latency source: {source})" if isinstance(source, str) else ""))
    _out(f"wrote {wav} ({turn.duration_s:.1f} s) and {js}")
    if turn.status != "completed":
        error = redact(turn.error, _env_key()) if turn.error else "no error message"
        print(f"turn {turn.status}: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


def _turn_detection(args):
    """``--manual`` / ``--semantic-vad`` / default server VAD (never both flags)."""
    from .errors import ConfigError

    if args.manual and args.semantic_vad:
        raise ConfigError("--manual and --semantic-vad exclude each other")
    return None if args.manual else "semantic_vad" if args.semantic_vad else "server_vad"


# -- compare / report / replay -----------------------------------------------------------------------
def _warn_models(models) -> None:
    """Print catalog warnings for model names (never a refusal: the service decides, §7.8)."""
    from .catalog import check_model

    for model in models:
        for warning in check_model(model):
            print(f"warning: {warning}", file=sys.stderr, flush=True)


def _confirm(question: str) -> bool:
    """Ask on stdin; no answer possible (EOF, no stdin) is a refusal with a clear error (exit 2)."""
    from .errors import ConfigError

    print(question, end=" ", flush=True)
    try:
        answer = input()
    except (EOFError, OSError, RuntimeError):
        print(flush=True)
        raise ConfigError("no answer on stdin to the billing confirmation; nothing was created or run "
                          "(pass --yes to confirm non-interactively)") from None
    return answer.strip().lower() in ("y", "yes")


#: The one help text of --similarity-encoder (compare, replay).
_ENCODER_HELP = ("speaker encoder of the similarity columns: dvector, resemblyzer (the judge extra) or the path of an "
                 "ONNX speaker-verification model (e.g. a WavLM-SV, ECAPA or CAM++ export)")


@command("compare")
def _build_compare(sub):
    from .catalog import DEFAULT_COMPARE_MODELS

    p = sub.add_parser("compare", help="compare target models on cloned voices; writes a run directory and "
                       "an HTML report (re-run with the same --out to resume)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: reports/<UTC timestamp>/); "
                   "an existing one is resumed, finished turns are not re-run")
    p.add_argument("--repeats", type=int, default=1, help="turns per voice x model x prompt (default 1)")
    p.add_argument("--voices", nargs="+", metavar="WAV", help="reference recordings or directories of WAVs "
                   "(default: the packaged sample voices, qvtools/samples/voices)")
    p.add_argument("--prompts", nargs="+", metavar="FILE", help="spoken prompts (audio) or prompts.json "
                   "manifests (default: the packaged sample prompts)")
    p.add_argument("--models", nargs="+", metavar="MODEL", default=list(DEFAULT_COMPARE_MODELS),
                   help="realtime models, any names (default: " + " ".join(DEFAULT_COMPARE_MODELS) + "); names "
                   "outside the model catalog are warned about, not refused")
    p.add_argument("--workers", type=int, default=2, help="turns run in parallel (default 2)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the turns on the workers of this Dask scheduler "
                   "(e.g. tcp://host:8786; needs qvtools[dask]); this process still writes RUN_DIR alone")
    p.add_argument("--quick", action="store_true", help="a short run: only the first voice and the first "
                   "prompt (of the samples, or of those given), on every model")
    p.add_argument("--seed", type=int, default=0, help="seed of the turn order (default 0)")
    p.add_argument("--realtime", action="store_true", help="stream prompts at real-time pace (like a microphone)")
    p.add_argument("--retry-failed", action="store_true", help="re-run turns recorded as failed")
    p.add_argument("--manual", action="store_true",
                   help="no server VAD: commit and request the response right after the audio")
    p.add_argument("--semantic-vad", action="store_true",
                   help="turn_detection semantic_vad (qwen3.5+, §7.23) instead of server VAD")
    p.add_argument("--max-attempts", type=int, default=3, metavar="N",
                   help="attempts per turn while it fails transiently (COMMON_ERROR / close 1011, §7.24), each "
                        "on a new session; never re-creates a voice (default 3)")
    p.add_argument("--silence-ms", type=int, metavar="MS",
                   help="server VAD silence_duration_ms, 200-6000 (default: the service's)")
    p.add_argument("--prices", metavar="PRICES.json", help="your price table, for a cost estimate in the report "
                   "(format: qvtools.results.PRICES_FORMAT; qvtools ships no prices)")
    p.add_argument("--yes", action="store_true",
                   help="do not ask before creating voices and running turns on the billed cloud service")
    p.add_argument("--no-report", action="store_true", help="do not build report.html at the end")
    p.add_argument("--similarity-encoder", metavar="NAME|MODEL.onnx", help=_ENCODER_HELP + " (default: dvector)")
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from . import experiment
    from .report import build_report

    run_dir = args.out or experiment.default_run_dir()
    voices = experiment.resolve_voices(args.voices)
    prompts = experiment.resolve_prompts(args.prompts)
    _warn_models(args.models)
    if args.quick:
        voices, prompts = voices[:1], prompts[:1]
    _out(f"run directory: {run_dir}")
    with _workspace() as ws, contextlib.ExitStack() as stack:
        print(ws.describe(), file=sys.stderr, flush=True)
        executor = None
        if args.scheduler:
            from .cluster import dask_executor

            executor = stack.enter_context(dask_executor(args.scheduler, timeout=ws.settings.timeout_s,
                                                         base_url=ws.settings.base_url))
        exp = experiment.Experiment(ws, run_dir, voices=voices, prompts=prompts, models=args.models,
                                    repeats=args.repeats, seed=args.seed, realtime=args.realtime,
                                    workers=args.workers, retry_failed=args.retry_failed,
                                    turn_detection=_turn_detection(args), max_attempts=args.max_attempts,
                                    silence_duration_ms=args.silence_ms, prices=args.prices,
                                    executor=executor, similarity_encoder=args.similarity_encoder)
        if ws.settings.is_cloud:  # the local service never asks (it bills nothing)
            plan = exp.billing_plan()
            _out(plan.text())
            if plan.needs_confirmation and not args.yes:
                if not _confirm("Go ahead? [y/N]"):
                    _out("nothing created or run")
                    return 1
        frame = exp.run()
    n_ok = int((frame["status"] == "completed").fillna(False).sum())
    _out(f"{n_ok} of {len(frame)} turns completed; results: {run_dir}/results.parquet")
    if not args.no_report:
        _out(f"report: {build_report(run_dir)}")
    return 0 if n_ok == len(frame) else 1


@command("report")
def _build_report(sub):
    p = sub.add_parser("report", help="(re)build RUN_DIR/report.html from a compare run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--sample-turns", type=int, default=6, help="turns with audio players (default 6)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per notebook cell (default 600)")
    p.add_argument("--prices", metavar="PRICES.json", help="your price table for the cost estimate "
                   "(default: RUN_DIR/prices.json when the run was given one)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from .report import build_report

    _out(str(build_report(args.run_dir, sample_turns=args.sample_turns, timeout=args.timeout,
                          prices=args.prices)))
    return 0


@command("replay")
def _build_replay(sub):
    p = sub.add_parser("replay", help="recompute RUN_DIR/results.parquet and report.html from the saved turns "
                       "(turns.jsonl + reply WAVs), with no network -- e.g. to rebuild a cloud run's report")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--reference", nargs=2, action="append", metavar=("VOICE", "WAV"), default=[],
                   help="where the reference recording of VOICE is now (default: the path in run.json)")
    p.add_argument("--prices", metavar="PRICES.json", help="your price table for the cost estimate")
    p.add_argument("--sample-turns", type=int, default=6, help="turns with audio players (default 6)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per notebook cell (default 600)")
    p.add_argument("--no-report", action="store_true", help="only recompute results.parquet")
    p.add_argument("--similarity-encoder", metavar="NAME|MODEL.onnx",
                   help=_ENCODER_HELP + " (default: the run's)")
    p.set_defaults(func=_replay)


def _replay(args) -> int:
    from pathlib import Path

    from . import experiment
    from .report import build_report

    frame = experiment.replay(args.run_dir, references=dict(args.reference),
                              similarity_encoder=args.similarity_encoder)
    n_ok = int((frame["status"] == "completed").fillna(False).sum())
    _out(f"{len(frame)} turns replayed ({n_ok} completed); results: "
         f"{Path(args.run_dir) / experiment.RESULTS_FILE}")
    if not args.no_report:
        out = build_report(args.run_dir, sample_turns=args.sample_turns, timeout=args.timeout, prices=args.prices)
        _out(f"report: {out}")
    failures = frame.attrs.get("replay_failures") or []
    if failures:  # issue 23: the replay went on; the user is told in one line, and the status says so
        first_id, first_msg = failures[0]
        _err(f"error: {len(failures)} of {len(frame)} turn(s) could not be replayed (kept as journaled, with "
             f"metrics_error), e.g. {first_id}: {first_msg[:200]}")
        return 2
    return 0


@command("plan")
def _build_plan(sub):
    p = sub.add_parser("plan", help="from a pilot run: voices x prompts x repeats that detect a chosen difference "
                       "with 80 %% power, and what that run costs against the cloud")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--effect", nargs=2, action="append", metavar=("METRIC", "DIFF"), default=[],
                   help="a difference to detect, e.g. --effect ttfa_audible_ms 50 (repeatable; default: 50 ms "
                        "audible TTFA (TTFA without it), 0.02 similarity, 0.1 DNSMOS overall)")
    p.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    p.add_argument("--alpha", type=float, default=0.05, help="false-positive rate over the planned metrics "
                   "(default 0.05)")
    p.add_argument("--sims", type=int, default=400, help="simulated studies per design (default 400)")
    p.add_argument("--free-creations-left", type=int, default=None,
                   help="voice creations left in your free quota (default: the whole quota)")
    p.add_argument("--prices", metavar="PRICES.json", help="your price table, to price the tokens")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_plan)


def _plan(args) -> int:
    from .errors import ConfigError
    from .report import load_run
    from .planner import plan_study

    effects = None
    if args.effect:
        effects = {}
        for metric, value in args.effect:
            try:
                effects[metric] = float(value)
            except ValueError:
                raise ConfigError(f"--effect {metric} {value}: the difference must be a number") from None
    view = load_run(args.run_dir)
    plan = plan_study(view.frame, effects, power=args.power, alpha=args.alpha, n_sim=args.sims, seed=args.seed,
                      prices=args.prices or view.prices, free_creations_left=args.free_creations_left)
    _out(plan.text())
    return 0


# -- entry points --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="qvtools", description="Qwen voice cloning toolkit (offline local "
                                     "service by default; set QVTOOLS_REGION for the real service)")
    parser.add_argument("--version", action="version", version=f"qvtools {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for builder in COMMANDS.values():
        builder(sub)
    return parser


def main(argv=None) -> int:
    """Run one command; returns the exit status (0 ok, 1 check failed, 2 error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = None if args.command == "serve" else _user_warnings()
    try:
        return int(args.func(args) or 0)
    except QVError as exc:
        _error_line(str(exc))
        return 2
    except OSError as exc:  # e.g. an output path that cannot be written
        _error_line(str(exc))
        return 2
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:  # malformed input (issue 23)
        _error_line(f"malformed input ({type(exc).__name__}): {str(exc)[:300]}")
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ != "LibsndfileError":  # a file that is not audio; anything else is a bug
            raise
        _error_line(f"not readable audio: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if handler is not None:
            import logging

            logging.getLogger("qvtools").removeHandler(handler)


def _error_line(text: str) -> None:
    """THE error line of the CLI: one line on stderr, the key redacted."""
    from .errors import redact

    line = " ".join(redact(text, _env_key(), limit=None).split())
    print(f"error: {line}", file=sys.stderr, flush=True)


def _user_warnings():
    """Show qvtools' warnings (a dropped truncated journal line, a reference not used, a turn not replayed)
    on stderr as ``warning: ...`` lines while a command runs (issue 23: they were invisible on the CLI)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("qvtools")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    return handler


def _env_key() -> str | None:
    import os

    return os.environ.get("DASHSCOPE_API_KEY")


def run() -> None:
    """Console script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # python -m qvtools.cli
    run()
